"""BLEU and chrF of a translation run, through sacrebleu (its default 13a tokenisation, cased), with signatures.

The hypotheses come from kqv.generate.translate (beam search by default); the scores are corpus-level,
against one reference per sentence, and come with sacrebleu's signature so they can be compared.
"""

import math
import time

import sacrebleu

from kqv.data.parallel import read_pairs
from kqv.evaluate.perplexity import translation_perplexity
from kqv.generate.translate import translate
from kqv.runs.load import Run


def evaluate_translation(
    run: Run,
    pairs: list[tuple[str, str]] | None = None,
    beam: int = 4,
    alpha: float = 0.6,
    n_examples: int = 5,
) -> dict:
    """BLEU and chrF (sacrebleu, with their signatures) and perplexity on the run's test pairs (or `pairs`)."""
    if pairs is None:
        pairs = read_pairs(run.run_dir / "test.tsv")
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    started = time.perf_counter()
    hypotheses = translate(run, sources, beam=beam, alpha=alpha)
    seconds = time.perf_counter() - started
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    nll, n_tokens = translation_perplexity(run, pairs)
    return {
        "pairs": len(pairs),
        "beam": beam,
        "alpha": alpha,
        "bleu": bleu_score.score,
        "bleu_signature": str(bleu.get_signature()),
        "bleu_detail": str(bleu_score),
        "chrf": chrf_score.score,
        "chrf_signature": str(chrf.get_signature()),
        "nll": nll,
        "perplexity": math.exp(nll),
        "target_tokens": n_tokens,
        "decode_seconds": seconds,
        "examples": [
            {"source": s, "reference": r, "translation": h}
            for s, r, h in list(zip(sources, references, hypotheses, strict=True))[:n_examples]
        ],
        "hypotheses": hypotheses,
    }

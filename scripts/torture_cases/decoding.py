"""Torture part: greedy and beam search on untrained and briefly trained tiny translation models, in-process.

Each decoding (one model, one batch, one decoder: greedy, or beam 1/2/4/8 with α 0/0.6/1) survives when
nothing raises, no output holds <pad>, <s> or a stray eos, every output respects its length limit, beam 1
gives greedy's tokens and log-probabilities, and every reported log-probability equals teacher forcing's
(`sequence_logprob`) within 1e-6. The models are float64, as in the tests: float32 incremental decoding and
float32 teacher forcing differ by a few 1e-6 over 20 tokens, so the float32 scenario allows 1e-4.
"""

import functools
import pathlib
import random

import torch

from kqv.config import TransformerConfig
from kqv.generate.beam import Hypothesis, beam_search, greedy_decode, length_limits, sequence_logprob
from kqv.models.transformer import Transformer

PAD, BOS, EOS = 0, 1, 2
DECODERS = [("greedy", greedy_decode)] + [
    (f"beam {beam} α {alpha}", functools.partial(beam_search, beam=beam, alpha=alpha))
    for beam in (1, 2, 4, 8)
    for alpha in (0.0, 0.6, 1.0)
]


def random_config(rng: random.Random, vocab_size: int | None = None, max_len: int = 32) -> TransformerConfig:
    n_head = rng.choice([1, 2, 4])
    return TransformerConfig(
        vocab_size=vocab_size or rng.randint(4, 40),
        max_len=max_len,
        n_layer_enc=rng.randint(1, 2),
        n_layer_dec=rng.randint(1, 2),
        n_head=n_head,
        n_embd=n_head * rng.choice([4, 8]),
        d_ff=rng.choice([16, 32]),
        dropout=0.0,
        norm_first=rng.random() < 0.5,
        activation=rng.choice(["relu", "gelu"]),
        pos_encoding=rng.choice(["sinusoidal", "learned"]),
    )


def untrained(config: TransformerConfig, seed: int, dtype=torch.float64) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(config).to(dtype).eval()


def random_sources(rng: random.Random, vocab_size: int, B: int, longest: int) -> torch.Tensor:
    """(B, longest + 1) eos-terminated, right-padded source ids of 0…longest tokens."""
    src = torch.full((B, longest + 1), PAD)
    for i in range(B):
        n = rng.randint(0, longest) if vocab_size > 3 else 0
        src[i, :n] = torch.tensor([rng.randrange(3, vocab_size) for _ in range(n)], dtype=torch.long)
        src[i, n] = EOS
    return src


def reversal_batch(rng: random.Random, vocab_size: int, B: int = 32, longest: int = 7):
    """A batch of the reverse-the-sentence task: src, tgt_in, tgt_out, each (B, longest + 2)."""
    src, tgt_in, tgt_out = (torch.full((B, longest + 2), PAD) for _ in range(3))
    for i in range(B):
        ids = [rng.randrange(3, vocab_size) for _ in range(rng.randint(1, longest))]
        n = len(ids)
        src[i, : n + 1] = torch.tensor([*ids, EOS])
        tgt_in[i, : n + 1] = torch.tensor([BOS, *ids[::-1]])
        tgt_out[i, : n + 1] = torch.tensor([*ids[::-1], EOS])
    return src, tgt_in, tgt_out


def briefly_trained(rng: random.Random, seed: int, steps: int) -> Transformer:
    config = random_config(rng, vocab_size=rng.randint(8, 20))
    model = untrained(config, seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(*reversal_batch(rng, config.vocab_size)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def problems(model: Transformer, src: torch.Tensor, hyps: list[Hypothesis], tolerance: float) -> list[str]:
    """What is wrong with one decoder's outputs for src (B, S); [] when nothing is."""
    c = model.config
    if len(hyps) != src.shape[0]:
        return [f"{len(hyps)} outputs for {src.shape[0]} sentences"]
    found = []
    limits = length_limits(src, c.pad_id, 1.5, 10, c.max_len - 1).tolist()
    for i, h in enumerate(hyps):
        if {c.pad_id, c.bos_id, c.eos_id} & set(h.tokens):
            found.append(f"sentence {i}: pad, bos or eos inside the output {h.tokens}")
        if len(h.tokens) + 1 > limits[i]:
            found.append(f"sentence {i}: {len(h.tokens)} tokens + eos, over the limit {limits[i]}")
    if found:
        return found
    teacher_forced = sequence_logprob(model, src, [h.tokens for h in hyps])
    for i, (h, lp) in enumerate(zip(hyps, teacher_forced, strict=True)):
        if not abs(h.logprob - lp) <= tolerance:
            found.append(f"sentence {i}: reported log P {h.logprob:.9g}, teacher forcing {lp:.9g}")
    return found


def decode_every_way(model: Transformer, src: torch.Tensor, tolerance: float = 1e-6) -> tuple[int, int, list[str]]:
    """Every decoder on one batch -> (tried, survived, notes)."""
    tried, survived, notes = 0, 0, []
    greedy = None
    for name, decode in DECODERS:
        tried += 1
        try:
            hyps = decode(model, src)
            found = problems(model, src, hyps, tolerance)
        except Exception as e:  # a crash is an outcome to report, not to stop at
            hyps, found = None, [f"raised {type(e).__name__}: {e}"]
        if name == "greedy":
            greedy = hyps
        elif name.startswith("beam 1 ") and greedy is not None and hyps is not None:
            for i, (g, b) in enumerate(zip(greedy, hyps, strict=True)):
                if g.tokens != b.tokens or not abs(g.logprob - b.logprob) <= tolerance:
                    found.append(f"sentence {i}: beam 1 gives {b.tokens}, greedy {g.tokens}")
        if found:
            notes.append(f"{name}: {found[0]}" + (f" (+{len(found) - 1} more)" if len(found) > 1 else ""))
        else:
            survived += 1
    return tried, survived, notes


def many_models(models_and_sources, tolerance: float = 1e-6) -> tuple[int, int, list[str]]:
    tried, survived, notes = 0, 0, []
    for label, model, src in models_and_sources:
        t, s, n = decode_every_way(model, src, tolerance)
        tried, survived, notes = tried + t, survived + s, notes + [f"{label}, {note}" for note in n]
    return tried, survived, notes


def untrained_models(quick: bool):
    rng = random.Random(11)
    for seed in range(4 if quick else 16):
        config = random_config(rng)
        src = random_sources(rng, config.vocab_size, B=rng.choice([1, 3, 6]), longest=8)
        yield f"untrained model {seed} (V={config.vocab_size})", untrained(config, seed), src


def trained_models(quick: bool):
    rng = random.Random(12)
    for seed in range(1 if quick else 4):
        model = briefly_trained(rng, seed, steps=60 if quick else 200)
        src = random_sources(rng, model.config.vocab_size, B=6, longest=7)
        yield f"trained model {seed}", model, src


def tiny_vocabularies(quick: bool):
    """3 to 6 ids, specials included: beams of 4 and 8 are wider than the vocabulary."""
    rng = random.Random(13)
    for vocab_size in (3, 4, 5, 6):
        config = random_config(rng, vocab_size=vocab_size)
        yield f"V={vocab_size}", untrained(config, vocab_size), random_sources(rng, vocab_size, B=3, longest=4)


def sources_at_max_len(quick: bool):
    """Sources as long as the model allows: the output limit is capped at max_len - 1."""
    rng = random.Random(14)
    for seed in range(1 if quick else 3):
        config = random_config(rng, max_len=10)
        src = random_sources(rng, config.vocab_size, B=2, longest=9)
        src[0, :9] = torch.tensor([rng.randrange(3, config.vocab_size) for _ in range(9)])
        src[0, 9] = EOS
        yield f"max_len model {seed}", untrained(config, seed), src


def float32_models(quick: bool):
    rng = random.Random(15)
    for seed in range(1 if quick else 4):
        config = random_config(rng)
        src = random_sources(rng, config.vocab_size, B=4, longest=8)
        yield f"float32 model {seed}", untrained(config, seed, torch.float32), src


def specials_only_vocabulary_gives_empty_outputs(quick: bool) -> tuple[int, int, list[str]]:
    """V = 3 (pad, bos, eos): eos is the only thing either search may propose, so every output is empty."""
    model = untrained(random_config(random.Random(16), vocab_size=3), 0)
    src = torch.tensor([[EOS, PAD], [EOS, PAD]])
    tried, survived, notes = 0, 0, []
    for name, decode in DECODERS:
        tried += 1
        try:
            outputs = [h.tokens for h in decode(model, src)]
        except Exception as e:
            outputs = f"raised {type(e).__name__}: {e}"
        if outputs == [[], []]:
            survived += 1
        else:
            notes.append(f"{name}: {outputs}")
    return tried, survived, notes


def alone_equals_batched(quick: bool) -> tuple[int, int, list[str]]:
    """Each sentence decoded alone, without its padding, gives what it got in its batch."""
    rng = random.Random(17)
    tried, survived, notes = 0, 0, []
    for seed in range(2 if quick else 6):
        config = random_config(rng)
        model, src = untrained(config, seed), random_sources(rng, config.vocab_size, B=5, longest=8)
        for name, decode in DECODERS[::3]:
            tried += 1
            try:
                batched = [h.tokens for h in decode(model, src)]
                alone = [decode(model, src[i : i + 1, : int((src[i] != PAD).sum())])[0].tokens for i in range(len(src))]
            except Exception as e:
                batched, alone = None, f"raised {type(e).__name__}: {e}"
            if alone == batched:
                survived += 1
            else:
                notes.append(f"model {seed}, {name}: alone {alone}, batched {batched}")
    return tried, survived, notes


def scenarios(quick: bool, work: pathlib.Path) -> list[tuple[str, int, int, list[str]]]:
    """Run this part's scenarios; -> rows (scenario name, tried, survived, notes on each failure)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and the machine is shared
    try:
        return [
            ("decoding: untrained models, random sentences", *many_models(untrained_models(quick))),
            ("decoding: briefly trained models (reverse the sentence)", *many_models(trained_models(quick))),
            ("decoding: vocabularies of 3-6 ids, beams wider than them", *many_models(tiny_vocabularies(quick))),
            ("decoding: sources of max_len tokens", *many_models(sources_at_max_len(quick))),
            ("decoding: float32 models (log P within 1e-4)", *many_models(float32_models(quick), tolerance=1e-4)),
            ("decoding: only special ids -> empty outputs", *specials_only_vocabulary_gives_empty_outputs(quick)),
            ("decoding: a sentence alone = in its batch", *alone_equals_batched(quick)),
        ]
    finally:
        torch.set_num_threads(threads)

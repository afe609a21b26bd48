"""`kqv why` for a translation model: which source words one output word comes from, by every method.

The question names one decoder position t — its logits predict output token t+1 — and a contrast:
that token against another. By default t is the first output token the corrupted source changes
(with --corrupt), else the last word before </s>.

    question = ask_translation(model, tokenizer, "The pizza came out of the oven", corrupt="pizza=bread")
    report = answer_translation(model, question, methods=("lens", "patch", "rollout", "grad"))

Methods (kqv.inspect.source): cross-attention, attention rollout through the encoder, gradient × input
and integrated gradients on the source token embeddings — each a (T, S) matrix over every output
token — activation patching between the two sources, and the logit lens on the decoder. Direct
logit attribution and the head detectors are written for the GPT; asked for by name on a translation
run they are a UserError, and `all` leaves them out with a note.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from kqv.errors import UserError
from kqv.generate.beam import greedy_decode
from kqv.inspect.attention import find_query, token_label, token_texts, word_around
from kqv.inspect.contrast import Contrast
from kqv.inspect.patterns import encode_text
from kqv.inspect.source import decoder_lens, source_attribution, source_patching
from kqv.inspect.why import Answer, corruption, other_token, plain, single_token

TRANSLATION_METHODS = ("lens", "patch", "rollout", "grad")
GPT_ONLY = ("dla", "heads")
POINTING = ("cross-attention", "rollout", "grad×input", "integrated gradients", "patching")


@dataclass
class SourceQuestion:
    text: str
    src_ids: list[int]  # the source with </s>
    src_tokens: list[str]
    translation: str
    tgt_in: list[int]  # <s> + the translation
    tgt_tokens: list[str]
    position: int  # decoder position t: its logits predict tgt_in[t + 1]
    contrast: Contrast
    target_text: str
    other_text: str
    how: str
    corrupt_text: str | None = None
    corrupt_ids: list[int] | None = None
    specials: frozenset[str] = frozenset()

    def word(self, s: int) -> str:
        return word_around(self.src_tokens, s, self.specials).strip() or token_label(self.src_tokens[s])


@dataclass
class SourceReport:
    question: SourceQuestion
    results: dict[str, object]
    answers: list[Answer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def agreement(self) -> tuple[int | None, list[str], list[str]]:
        pointing = [a for a in self.answers if a.method in POINTING and a.token is not None]
        if not pointing:
            return None, [], []
        winner = int(np.bincount([a.token for a in pointing]).argmax())
        return (
            winner,
            [a.method for a in pointing if a.token == winner],
            [a.method for a in pointing if a.token != winner],
        )

    def to_dict(self) -> dict:
        q = self.question
        winner, agree, disagree = self.agreement()
        return {
            "family": "translation",
            "text": q.text,
            "source_tokens": [token_label(t) for t in q.src_tokens],
            "translation": q.translation,
            "target_tokens": [token_label(t) for t in q.tgt_tokens],
            "position": q.position,
            "target": {"id": q.contrast.target, "text": q.target_text},
            "other": {"id": q.contrast.other, "text": q.other_text},
            "how": q.how,
            "corrupted": q.corrupt_text,
            "answers": [plain(a) for a in self.answers],
            "agreement": {
                "token": winner,
                "word": None if winner is None else q.word(winner),
                "agree": agree,
                "disagree": disagree,
            },  # fmt: skip
            "notes": self.notes,
            "results": {name: plain(result) for name, result in self.results.items()},
        }


def _source_ids(model, tokenizer, text: str, what: str) -> list[int]:
    ids = encode_text(tokenizer, text, what) + [model.config.eos_id]
    if len(ids) > model.config.max_len:
        raise UserError(f"the {what} is {len(ids)} tokens with </s>; the model reads at most {model.config.max_len}")
    return ids


def _greedy(model, src_ids: list[int]) -> list[int]:
    device = next(model.parameters()).device
    with torch.no_grad():
        return greedy_decode(model, torch.tensor([src_ids], device=device))[0].tokens


def _logits(model, src_ids: list[int], tgt_in: list[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(torch.tensor([src_ids], device=device), torch.tensor([tgt_in], device=device)).logits[0].float()


def ask_translation(
    model,
    tokenizer,
    text: str,
    *,
    translation: str | None = None,
    query_token: str | None = None,
    query_index: int | None = None,
    target: str | None = None,
    other: str | None = None,
    corrupt: str | None = None,
    corrupt_text: str | None = None,
) -> SourceQuestion:
    """The question about one output token of the translation of `text` (the model's greedy one by default).

    query_token names the output word whose prediction is explained; query_index a decoder position."""
    c = model.config
    src_ids = _source_ids(model, tokenizer, text, "source text")
    tgt_ids = _greedy(model, src_ids) if translation is None else encode_text(tokenizer, translation, "translation")
    if not tgt_ids:
        raise UserError("the translation is empty: nothing to explain; give one with --translation TEXT")
    tgt_in = [c.bos_id, *tgt_ids]
    if len(tgt_in) > c.max_len:
        raise UserError(f"the translation is {len(tgt_in)} tokens with <s>; the model reads at most {c.max_len}")
    if translation is None:
        translation = tokenizer.decode(tgt_ids)
    corrupt_text, corrupt_ids = corruption(
        text, src_ids, corrupt, corrupt_text, lambda t: _source_ids(model, tokenizer, t, "corrupted source"), "source"
    )
    T = len(tgt_in)
    tgt_tokens = token_texts(tokenizer, tgt_in)
    corrupted_next = _logits(model, corrupt_ids, tgt_in).argmax(-1).tolist() if corrupt_ids else None  # (T,)
    if query_index is not None:
        if not -(T - 1) <= query_index < T - 1:
            raise UserError(f"--query-index {query_index}: the translation has output positions 0 … {T - 2}")
        position, where = query_index % (T - 1), f"--query-index {query_index}"
    elif query_token is not None:
        found = find_query(tgt_tokens, query_token, "translation")
        position, where = max(found.start - 1, 0), f"the output word {query_token.strip()!r}"
    else:
        changed = [t for t in range(T - 1) if corrupted_next and corrupted_next[t] != tgt_in[t + 1]]
        position, where = (
            (changed[0], "the first output token the corruption changes")
            if changed
            else (T - 2, "the last output token")
        )
    logits = _logits(model, src_ids, tgt_in)[position]  # (V,)
    target_id = single_token(tokenizer, target, "--target") if target is not None else tgt_in[position + 1]
    corrupted = corrupted_next[position] if corrupted_next is not None else None
    other_id, how = other_token(tokenizer, other, target_id, corrupted, logits, "source")
    target_text, other_text = token_texts(tokenizer, [target_id])[0], token_texts(tokenizer, [other_id])[0]
    specials = frozenset(token_texts(tokenizer, [c.pad_id, c.bos_id, c.eos_id]))
    how = f"query: {where}; target: {'given' if target is not None else 'the translation’s token'}; {how}"
    return SourceQuestion(
        text, src_ids, token_texts(tokenizer, src_ids), translation, tgt_in, tgt_tokens, position,
        Contrast(target_id, other_id, position), target_text, other_text, how, corrupt_text, corrupt_ids, specials,
    )  # fmt: skip


def answer_translation(model, question: SourceQuestion, methods, *, steps: int = 32, top: int = 5, **_) -> SourceReport:
    """Each of `methods` on the question. Explicitly asked GPT-only methods are a UserError."""
    asked = list(methods)
    refused = [m for m in asked if m in GPT_ONLY]
    if refused and set(asked) != set(TRANSLATION_METHODS + GPT_ONLY):
        raise UserError(
            f"--method {refused[0]} is for GPT runs; on a translation run use {', '.join(TRANSLATION_METHODS)}"
        )
    q, t = question, question.position
    report = SourceReport(q, {})
    if refused:
        report.notes.append(f"{' and '.join(refused)}: written for the GPT, left out on a translation run")
    if "rollout" in asked or "grad" in asked:
        attribution = source_attribution(model, q.src_ids, q.tgt_in, steps=steps)
        report.results["source"] = attribution
        report.answers.append(_pointer("cross-attention", q, attribution.cross[t]))
        if "rollout" in asked:
            report.answers.append(_pointer("rollout", q, attribution.rollout[t]))
        if "grad" in asked:
            report.answers.append(_pointer("grad×input", q, attribution.grad_x_input[t]))
            report.answers.append(_pointer("integrated gradients", q, attribution.integrated[t]))
    if "lens" in asked:
        lens = decoder_lens(model, q.src_ids, q.tgt_in, target=q.contrast.target, k=top)
        report.results["lens"] = lens
        prob = lens.target_prob[:, t]  # (Ld+1,)
        top1 = (lens.top_ids[:, t, 0] == q.contrast.target).tolist()
        first = next((i for i in range(len(top1)) if all(top1[i:])), None)
        where = f"the top prediction from {lens.rows[first]} on" if first is not None else "never the top prediction"
        report.answers.append(
            Answer(
                "lens",
                f"lens: *{token_label(q.target_text)}* is {where} (P = {float(prob[-1]):.2f} at the end)",
                None,
                first,
            )
        )
    if "patch" in asked:
        if q.corrupt_ids is None:
            report.notes.append("patching needs a corrupted source: --corrupt WORD=WORD (same token length)")
        else:
            patching = source_patching(model, q.src_ids, q.corrupt_ids, q.tgt_in, q.contrast)
            report.results["patch"] = patching
            enc = np.asarray(patching.encoder.double().cpu())  # (L_enc, S)
            layer, s = np.unravel_index(int(np.argmax(enc)), enc.shape)
            heads = np.asarray(patching.cross_heads.double().cpu())
            hl, hh = np.unravel_index(int(np.argmax(heads)), heads.shape)
            line = (
                f"patching: restores {enc[layer, s]:.2f} at (encoder layer {layer}, *{q.word(int(s))}*); "
                f"best cross-attention head {hl}.{hh} ({heads[hl, hh]:.2f})"
            )
            report.answers.append(Answer("patching", line, int(s), float(enc[layer, s])))
    return report


def _pointer(method: str, q: SourceQuestion, row: torch.Tensor) -> Answer:
    scores = np.asarray(row.detach().double().cpu())  # (S,)
    scores[-1] = np.nan  # </s> is not a word of the source
    if np.all(np.isnan(scores)):
        return Answer(method, f"{method}: the source has no word")
    s = int(np.nanargmax(np.abs(scores)))
    total = np.nansum(np.abs(scores))
    share = abs(scores[s]) / total if total > 0 else 0.0
    return Answer(method, f"{method} puts {share:.2f} on *{q.word(s)}*", s, float(scores[s]))

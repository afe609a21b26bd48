"""`kqv why`: one question about one prediction, answered by every method side by side.

A question names a prediction — the token after the query position of a text (by default the last
token) — and a contrast: the target token against another (kqv.inspect.contrast). "Is *it* the
pizza?" on the kitchen GPT is: after "… the oven and it", *tasted* (what a savoury dish does)
against *smelled* (a sweet one), with "pizza" → "cake" as the corruption that flips it.

    question = ask(model, tokenizer, text, query_token="it", corrupt="pizza=cake")
    report = answer(model, question, methods=("lens", "dla", "patch", "rollout", "grad", "heads"))
    report.answers          # one line of evidence per method, and which input token it points to

Methods (each its own module of kqv.inspect):
    lens     logit lens: from which layer on the target is the top prediction      (lens)
    dla      direct logit attribution: which heads and MLPs write the difference   (dla)
    patch    activation patching with the corrupted text, and head ablation        (patching)
    rollout  attention rollout: which input tokens the query's stream mixes in     (rollout)
    grad     gradient × input and integrated gradients on the token embeddings     (gradients)
    heads    previous-token, duplicate-token, induction and first-token heads      (heads)
    attention (always): the raw attention weights from the query — where heads look, for comparison
"""

import bisect
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from kqv.errors import UserError
from kqv.inspect.attention import find_query, resolve_index, token_label, token_texts, word_around
from kqv.inspect.contrast import Contrast
from kqv.inspect.dla import direct_logit_attribution
from kqv.inspect.gradients import gradient_x_input, integrated_gradients
from kqv.inspect.heads import detect_heads
from kqv.inspect.lens import logit_lens
from kqv.inspect.patching import ablate_heads, activation_patching
from kqv.inspect.patterns import encode_text
from kqv.inspect.rollout import Rollout, attention_rollout
from kqv.tokenizer import UnknownTokenError

METHODS = ("lens", "dla", "patch", "rollout", "grad", "heads")
SMALL_CHANGE = 0.5  # logit-difference change below which patching ratios are noise
POINTING = (
    "attention",
    "rollout",
    "grad×input",
    "integrated gradients",
    "patching",
)  # they name an input token  # name an input token


@dataclass
class Question:
    text: str
    ids: list[int]
    tokens: list[str]  # each token's text
    position: int  # the query: its logits predict the next token
    contrast: Contrast
    target_text: str
    other_text: str | None
    how: str  # how the target and other were chosen
    value: float  # the contrast on the text: logit[target] − logit[other] at the query
    corrupt_text: str | None = None
    corrupt_ids: list[int] | None = None
    corrupted_value: float | None = None  # … and on the corrupted text

    @property
    def labels(self) -> list[str]:
        return [token_label(t) for t in self.tokens]

    def word(self, index: int) -> str:
        """The word token `index` belongs to (a space: the word after it)."""
        if index <= self.position:
            labels, of = self.words()
            return labels[of[index]]
        return word_around(self.tokens, index).strip() or token_label(self.tokens[index])

    def words(self) -> tuple[list[str], list[int]]:
        """The words of the text up to the query, and each token's word: a char model's "p","i","z","z","a"
        make one word, and a space belongs to the word after it (as in a BPE piece " pizza")."""
        tokens = self.tokens[: self.position + 1]
        text = "".join(tokens)
        found = list(re.finditer(r"\S+", text))
        starts = [m.start() for m in found]
        labels = [m.group() for m in found]
        index, at = [], 0
        for t in tokens:
            if t.strip():
                index.append(bisect.bisect_right(starts, at + len(t) - len(t.lstrip())) - 1)
            else:
                index.append(bisect.bisect_left(starts, at + len(t)))  # the next word; past the end: "␣"
            at += len(t)
        if len(labels) in index:
            labels.append(token_label(" "))
        return labels, index

    def by_word(self, scores) -> np.ndarray:
        """(T,) token scores -> (words,) sums per word, up to the query."""
        labels, index = self.words()
        s = np.asarray(torch.as_tensor(scores).detach().double().cpu(), dtype=float)[: self.position + 1]
        return np.bincount(index, weights=s, minlength=len(labels))


@dataclass
class Answer:
    method: str
    summary: str  # one line of evidence
    token: int | None = None  # the input position it points to, if it names one
    score: float | None = None
    short: str = ""  # a few words for the one-line summary


@dataclass
class Report:
    question: Question
    results: dict[str, object]  # method -> the module's result (and "attention", "ablation")
    answers: list[Answer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # methods skipped, and why

    def agreement(self) -> tuple[str | None, list[str], list[str]]:
        """(the word most pointing methods name, the methods that name it, those that name another)."""
        labels, index = self.question.words()
        pointing = [(a.method, index[a.token]) for a in self.answers if a.method in POINTING and a.token is not None]
        if not pointing:
            return None, [], []
        winner = int(np.bincount([w for _, w in pointing]).argmax())
        agree = [m for m, w in pointing if w == winner]
        return labels[winner], agree, [m for m, w in pointing if w != winner]

    def named(self, method: str) -> str | None:
        """The word a pointing method names."""
        labels, index = self.question.words()
        return next((labels[index[a.token]] for a in self.answers if a.method == method and a.token is not None), None)

    def evidence(self) -> dict[str, np.ndarray]:
        """Each pointing method's scores of the words up to the query (Question.words), as shares of the row's
        total |score|."""
        q, r = self.question, self.results
        rows = {}
        if "attention" in r:
            rows["attention (mean of heads)"] = r["attention"][:, :, q.position, : q.position + 1].mean(dim=(0, 1))
        if "rollout" in r:
            rows["rollout"] = r["rollout"].final[q.position, : q.position + 1]
        for name, attribution in r.get("grad", {}).items():
            rows[name] = attribution.scores[: q.position + 1]
        out = {}
        for name, scores in rows.items():
            s = q.by_word(scores)
            total = np.abs(s).sum()
            out[name] = s / total if total > 0 else s
        return out

    def summary(self) -> str:
        """One line: the prediction, what the corruption does to it, each method's answer in a few words, and
        which words the pointing methods name."""
        q = self.question
        target, other = (token_label(t).strip("␣") for t in (q.target_text, q.other_text))
        line = f"*{q.word(q.position)}* → *{target}* (vs *{other}*)"
        patching = self.results.get("patch")
        if patching is not None:
            line += f": the corrupted text moves it {patching.clean:+.2f} → {patching.corrupted:+.2f}"
        short = [a.short or a.summary for a in self.answers if a.method not in ("attention", "heads")]
        if short:
            line += "; " + "; ".join(short)
        labels, index = q.words()
        named: dict[str, list[str]] = {}
        for a in self.answers:
            if a.method in POINTING and a.token is not None:
                named.setdefault(labels[index[a.token]], []).append(a.method)
        if named:
            ranked = sorted(named.items(), key=lambda item: -len(item[1]))
            line += "; words named: " + ", ".join(f"*{w}* ({', '.join(m)})" for w, m in ranked)
        return line

    def to_dict(self) -> dict:
        return report_dict(self)


# --- the question


def single_token(tokenizer, word: str, flag: str) -> int:
    """A word as one token of the vocabulary: " word" (as it follows a space) or else "word"."""
    tried = []
    for candidate in [word] if word.startswith(" ") or not word.strip() else [" " + word, word]:
        try:
            ids = tokenizer.encode(candidate)
        except UnknownTokenError:
            continue
        if len(ids) == 1:
            return ids[0]
        tried.append(ids)
    if not tried:
        raise UserError(f"{flag} {word!r}: this model's vocabulary cannot write it")
    pieces = ", ".join(repr(token_label(t)) for t in token_texts(tokenizer, tried[-1]))
    raise UserError(
        f"{flag} {word!r} is {len(tried[-1])} tokens ({pieces}) for this model; "
        f"the methods compare one next token, so give one token, e.g. {flag} {token_texts(tokenizer, tried[-1])[0]!r}"
    )


def corrupt_words(text: str, spec: str) -> str:
    """ "pizza=cake" -> the text with every whole-word "pizza" (any case) replaced by "cake"."""
    old, sep, new = spec.partition("=")
    if not sep or not old.strip() or not new.strip():
        raise UserError(f"--corrupt {spec!r}: write WORD=WORD, e.g. --corrupt pizza=cake")
    pattern = re.compile(rf"(?<!\w){re.escape(old.strip())}(?!\w)", re.IGNORECASE)
    if not pattern.search(text):
        raise UserError(f"--corrupt {spec!r}: {old.strip()!r} is not a word of the text")
    return pattern.sub(new.strip(), text)


def corruption(
    text: str, ids: list[int], corrupt: str | None, corrupt_text: str | None, encode, what: str
) -> tuple[str | None, list[int] | None]:
    """--corrupt WORD=WORD or --corrupt-text TEXT -> (the corrupted text, its ids), checked against the clean
    `ids`: the same token length (patching swaps activations position by position), and not the same text."""
    if corrupt is not None and corrupt_text is not None:
        raise UserError("give --corrupt WORD=WORD or --corrupt-text TEXT, not both")
    if corrupt is not None:
        corrupt_text = corrupt_words(text, corrupt)
    if corrupt_text is None:
        return None, None
    corrupt_ids = encode(corrupt_text)
    if len(corrupt_ids) != len(ids):
        raise UserError(
            f"the corrupted {what} is {len(corrupt_ids)} tokens and the clean one {len(ids)}; patching swaps "
            "activations position by position, so pick a replacement of the same token length"
        )
    if corrupt_ids == ids:
        raise UserError(f"the corrupted {what} is the same as the clean one; change a word with --corrupt WORD=WORD")
    return corrupt_text, corrupt_ids


def other_token(
    tokenizer, other: str | None, target_id: int, corrupted: int | None, logits: torch.Tensor, what: str
) -> tuple[int, str]:
    """The contrast's other token and how it was chosen: the one given; else the corrupted input's top
    prediction (`corrupted`) when it is not the target; else the model's most likely token besides the target."""
    if other is not None:
        other_id, how = single_token(tokenizer, other, "--other"), "other given"
    elif corrupted is not None and corrupted != target_id:
        other_id, how = corrupted, f"other: the corrupted {what}'s top prediction"
    else:
        ranked = torch.argsort(logits, descending=True).tolist()
        other_id, how = next(i for i in ranked if i != target_id), "other: the model's most likely other token"
    if other_id == target_id:
        raise UserError("--target and --other name the same token; the contrast needs two different ones")
    return other_id, how


def _pick_position(tokens: list[str], query_token: str | None, query_index: int | None) -> tuple[int, str]:
    if query_index is not None:
        return resolve_index(len(tokens), query_index), f"--query-index {query_index}"
    if query_token is not None:
        return find_query(tokens, query_token).index, repr(query_token.strip())
    return len(tokens) - 1, "the last token"


def _logits_at(model, ids: list[int], position: int) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(torch.tensor([ids], device=device)).logits[0, position].float()  # (V,)


def ask(
    model,
    tokenizer,
    text: str,
    *,
    query_token: str | None = None,
    query_index: int | None = None,
    target: str | None = None,
    other: str | None = None,
    corrupt: str | None = None,
    corrupt_text: str | None = None,
) -> Question:
    """The question about a GPT's prediction after the query position of `text`.

    target: the given token; else the token that follows the query in the text; else the model's top
    prediction. other: the given token; else what the corrupted text predicts there (if it differs);
    else the model's most likely token besides the target.
    """
    ids = encode_text(tokenizer, text, "text")
    if len(ids) > model.config.block_size:
        raise UserError(f"the text is {len(ids)} tokens; the model reads at most {model.config.block_size}")
    tokens = token_texts(tokenizer, ids)
    position, where = _pick_position(tokens, query_token, query_index)
    corrupt_text, corrupt_ids = corruption(
        text, ids, corrupt, corrupt_text, lambda t: encode_text(tokenizer, t, "corrupted text"), "text"
    )
    logits = _logits_at(model, ids, position)
    hows = []
    if target is not None:
        target_id = single_token(tokenizer, target, "--target")
        hows.append("target given")
    elif position + 1 < len(ids):
        target_id = ids[position + 1]
        hows.append("target: the next token of the text")
    else:
        target_id = int(logits.argmax())
        hows.append("target: the model's top prediction")
    corrupt_logits = None if corrupt_ids is None else _logits_at(model, corrupt_ids, position)  # (V,)
    corrupted = None if corrupt_logits is None else int(corrupt_logits.argmax())
    other_id, how = other_token(tokenizer, other, target_id, corrupted, logits, "text")
    hows.append(how)
    contrast = Contrast(target_id, other_id, position)
    target_text, other_text = (token_texts(tokenizer, [i])[0] for i in (target_id, other_id))
    how = f"query: {where}; " + "; ".join(hows)
    value = float(logits[target_id] - logits[other_id])
    corrupted_value = None if corrupt_logits is None else float(corrupt_logits[target_id] - corrupt_logits[other_id])
    return Question(
        text, ids, tokens, position, contrast, target_text, other_text, how, value, corrupt_text, corrupt_ids,
        corrupted_value,
    )  # fmt: skip


# --- the answers


def answer(
    model, question: Question, methods=METHODS, *, steps: int = 32, baseline: str = "zero", top: int = 5
) -> Report:
    """Run each method on the question -> a Report with every result and one Answer per method."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)} or all")
    q, c = question, question.contrast
    report = Report(q, {})
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(torch.tensor([q.ids], device=device), need_patterns=True)
    patterns = torch.stack([p[0] for p in out.patterns]).float().cpu()  # (L, nh, T, T)
    report.results["attention"] = patterns
    report.answers.append(_attention_answer(q, patterns))
    for method in methods:
        if method == "lens":
            lens = logit_lens(model, q.ids, target=c.target, k=top)
            report.results["lens"] = lens
            report.answers.append(_lens_answer(q, lens))
        elif method == "dla":
            dla = direct_logit_attribution(model, q.ids, c)
            report.results["dla"] = dla
            report.answers.append(_dla_answer(q, dla))
        elif method == "patch":
            for how in ("zero", "mean"):
                ablation = ablate_heads(model, q.ids, c, how=how)
                report.results[f"{how}_ablation"] = ablation
                report.answers.append(_ablation_answer(q, ablation, patterns))
            if q.corrupt_ids is None:
                report.notes.append("patching needs a corrupted text: --corrupt WORD=WORD (same token length)")
            else:
                patching = activation_patching(model, q.ids, q.corrupt_ids, c)
                report.results["patch"] = patching
                if abs(patching.clean - patching.corrupted) < SMALL_CHANGE:
                    report.notes.append(
                        f"the corruption moves the logit difference only from {patching.clean:+.2f} to "
                        f"{patching.corrupted:+.2f}: the model hardly tells the two texts apart here, so the patching "
                        "ratios divide by a small number and are unreliable"
                    )
                report.answers.append(_patching_answer(q, patching))
        elif method == "rollout":
            layers = attention_rollout(patterns)  # (L, T, T), from the patterns read above
            rolled = Rollout(layers, layers[-1])
            report.results["rollout"] = rolled
            report.answers.append(_pointer("rollout", q, rolled.final[q.position], "of the query's stream"))
        elif method == "grad":
            gxi = gradient_x_input(model, q.ids, c)
            ig = integrated_gradients(model, q.ids, c, steps=steps, baseline=baseline)
            report.results["grad"] = {"grad×input": gxi, "integrated gradients": ig}
            report.answers.append(_pointer("grad×input", q, gxi.scores, "of the logit difference"))
            report.answers.append(_pointer("integrated gradients", q, ig.scores, "of the logit difference"))
        elif method == "heads":
            scores = detect_heads(model, length=max(2, min(model.config.block_size // 2, 32)), batch=8)
            report.results["heads"] = scores
            report.answers.append(_heads_answer(scores))
    return report


def _pointer(method: str, q: Question, scores, what: str) -> Answer:
    """The word before the query's own with the largest |summed score| (a word: all of its tokens)."""
    labels, index = q.words()
    s = q.by_word(scores)
    s[index[q.position]] = np.nan  # the query's own word left out
    if np.all(np.isnan(s)):
        return Answer(method, f"{method}: nothing before the query to point at")
    w = int(np.nanargmax(np.abs(s)))
    total = np.nansum(np.abs(s))
    share = abs(s[w]) / total if total > 0 else 0.0
    token = max(i for i, word in enumerate(index) if word == w)  # the word's last token
    short = f"{'IG' if method == 'integrated gradients' else method} *{labels[w]}*"
    return Answer(method, f"{method} puts {share:.2f} {what} on *{labels[w]}*", token, float(s[w]), short)


def _attention_answer(q: Question, patterns: torch.Tensor) -> Answer:
    """The strongest weight any head puts, from the query, on an earlier token."""
    if q.position == 0:
        return Answer("attention", "attention: the query is the first token; there is nothing before it to look at")
    row = patterns[:, :, q.position, : q.position]  # (L, nh, position): the earlier keys
    L, nh, T = row.shape
    flat = int(row.flatten().argmax())
    layer, head, key = flat // (nh * T), (flat // T) % nh, flat % T
    weight = float(row[layer, head, key])
    return Answer("attention", f"attention: head {layer}.{head} puts {weight:.2f} on *{q.word(key)}*", key, weight)


def _lens_answer(q: Question, lens) -> Answer:
    first = lens.first_row(q.position)
    rows = lens.rows
    if first is None:
        return Answer("lens", f"lens: *{token_label(q.target_text)}* never becomes the top prediction at the query",
                      short="lens: never top")  # fmt: skip
    line = f"lens: *{token_label(q.target_text)}* is the top prediction from {rows[first]} on"
    return Answer("lens", line, None, first, f"lens from {rows[first]}")


def _dla_answer(q: Question, dla) -> Answer:
    values = np.asarray(dla.values.double().cpu())
    i = int(np.argmax(np.abs(values)))
    return Answer(
        "dla", f"DLA: {dla.labels[i]} writes {values[i]:+.2f} of the {dla.model_value:+.2f} logit difference", None,
        float(values[i]), f"DLA {dla.labels[i]} {values[i]:+.2f}",
    )  # fmt: skip


def _ablation_answer(q: Question, ablation, patterns: torch.Tensor) -> Answer:
    """The head whose ablation moves the logit difference most, and where it looks from the query."""
    change = np.asarray((ablation.values - ablation.clean).double().cpu())  # (L, nh)
    layer, head = (int(i) for i in np.unravel_index(int(np.argmax(np.abs(change))), change.shape))
    looks = ""
    if q.position > 0:
        row = patterns[layer, head, q.position, : q.position]  # (position,): the earlier keys
        key = int(row.argmax())
        looks = f"; from the query that head puts {float(row[key]):.2f} on *{q.word(key)}*"
    return Answer(
        f"{ablation.how}-ablation",
        f"{ablation.how}-ablating head {layer}.{head} moves the logit difference by {change[layer, head]:+.2f} "
        f"(of {ablation.clean:+.2f}){looks}",
        None, float(change[layer, head]), f"{ablation.how}-ablating head {layer}.{head} {change[layer, head]:+.2f}",
    )  # fmt: skip


def _patching_answer(q: Question, patching) -> Answer:
    """Where the clean information sits, layer by layer (the best position of each row of the residual sweep),
    and the heads, at their positions, whose clean output restores most."""
    resid = np.asarray(patching.resid.double().cpu())  # (L, T)
    earlier = resid[:, : q.position]  # (L, position): before the query
    token = None
    parts = []
    if earlier.size:
        layer, pos = np.unravel_index(int(np.argmax(earlier)), earlier.shape)
        token = int(pos)
        parts.append(f"restores {earlier[layer, pos]:.2f} at (layer {layer}, *{q.word(pos)}*)")
    path = [int(np.argmax(resid[layer, : q.position + 1])) for layer in range(resid.shape[0])]
    steps = [f"*{q.word(p)}* ({resid[layer, p]:.2f})" for layer, p in enumerate(path)]
    parts.append("path through the layers: " + " → ".join(steps))
    if patching.heads_by_position is not None:
        by_position = np.asarray(patching.heads_by_position.double().cpu())  # (L, nh, T)
        best = np.argsort(by_position, axis=None)[::-1][:3]
        cells = [np.unravel_index(int(i), by_position.shape) for i in best]
        moved = [
            f"{l}.{h} at *{q.word(t)}* ({by_position[l, h, t]:.2f})" for l, h, t in cells if by_position[l, h, t] > 0.05
        ]
        if moved:
            parts.append("heads: " + ", ".join(moved))
    short = "patching " + " → ".join(f"*{q.word(p)}*" for p in dict.fromkeys(path))
    return Answer(
        "patching", "patching: " + "; ".join(parts), token, float(earlier.max()) if earlier.size else None, short
    )


def _heads_answer(scores) -> Answer:
    parts = []
    for kind in ("previous", "induction", "duplicate", "first"):
        layer, head, score = scores.top(kind, 1)[0]
        best = scores.ceiling.get(kind)
        parts.append(f"{kind} {layer}.{head} ({score:.2f}" + (f"/{best:.2f}" if best is not None else "") + ")")
    return Answer("heads", "heads: the best head per detector (score/a perfect head's): " + ", ".join(parts))


# --- as JSON (kqv why --json, the page's /api/why)


def plain(value):
    """Results as JSON-ready values: tensors and arrays as nested lists, dataclasses as dicts."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.double().tolist() if value.is_floating_point() else value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return {name: plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def report_dict(report: Report) -> dict:
    q = report.question
    winner, agree, disagree = report.agreement()
    return {
        "text": q.text,
        "tokens": q.labels,
        "position": q.position,
        "target": {"id": q.contrast.target, "text": q.target_text},
        "other": {"id": q.contrast.other, "text": q.other_text},
        "how": q.how,
        "corrupted": q.corrupt_text,
        "answers": [plain(a) for a in report.answers],
        "agreement": {"word": winner, "agree": agree, "disagree": disagree},
        "notes": report.notes,
        "summary": report.summary(),
        "words": report.question.words()[0],
        "evidence": {name: plain(v) for name, v in report.evidence().items()},
        "results": {name: plain(result) for name, result in report.results.items()},
    }

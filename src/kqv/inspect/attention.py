"""Attention patterns read as numbers: per-head summaries, the keys a query looks at, readable token labels.

Everything here is a plain function of NumPy arrays and strings, so it works the same on a GPT's
masked self-attention, an encoder's self-attention and a decoder's cross-attention. One head's
pattern is a (Tq, Tk) matrix: row i is query token i, column j key token j, and each row is a
probability distribution over the keys that query may see (it sums to 1).

Worked example: a causal head that always looks one token back (T = 4).

    keys ->  0    1    2    3            entropy   (nats) of each row: 0, 0, 0, 0 -> 0.0
    q 0    [1.0  .    .    .  ]          prev_token  mean of A[i, i−1] over i ≥ 1 -> 1.0
    q 1    [1.0  0.0  .    .  ]          first_token mean of A[i, 0]   over i ≥ 1 -> 1/3
    q 2    [0.0  1.0  0.0  .  ]          self_token  mean of A[i, i]   over i ≥ 1 -> 0.0
    q 3    [0.0  0.0  1.0  0.0]

("." is a masked cell.) The first query is left out of the three "mean attention to" scores: it
has no previous token, and under a causal mask it has no choice at all (it must look at itself,
which is also the first token). A uniform row over n keys has entropy log n, a one-hot row 0.
"""

import re
from dataclasses import dataclass

import numpy as np
import torch

from kqv.errors import UserError
from kqv.inspect.cache import hooks
from kqv.nn.masks import allowed_positions

ROW_SUM_TOLERANCE = 1e-4  # float32 softmax rows sum to 1 within ~1e-6; this leaves room, catches real bugs


@dataclass(frozen=True)
class HeadSummary:
    """What one head does on one input, averaged over its query rows (see the module docstring)."""

    layer: int
    head: int
    entropy: float  # nats, mean over every query row; uniform over n keys = log n, one-hot = 0
    prev_token: float | None  # mean A[i, i−1] over queries i ≥ 1; None for cross-attention (no "previous" key)
    first_token: float  # mean A[i, 0] over queries i ≥ 1 (all queries when there is only one)
    self_token: float | None  # mean A[i, i] over queries i ≥ 1; None for cross-attention


@dataclass(frozen=True)
class Attended:
    """One key a query looks at: its position, its label and the attention weight it gets."""

    index: int
    token: str
    weight: float


@dataclass(frozen=True)
class QueryMatch:
    """Where `--query-token WORD` was found: the token that ends the chosen occurrence, and how many there were."""

    index: int  # the query position: the last token of the occurrence (a char model reads "it" as "i", "t")
    start: int  # first token of the occurrence
    count: int  # occurrences in the text; the last one is used


# --- summaries


def row_entropy(pattern: np.ndarray) -> np.ndarray:
    """(…, Tq, Tk) rows of probabilities -> (…, Tq) entropies in nats, with 0·log 0 = 0."""
    p = np.asarray(pattern, dtype=np.float64)
    logp = np.log(np.where(p > 0, p, 1.0))  # log 1 = 0 where p = 0: those cells add nothing
    return -(p * logp).sum(axis=-1)


def summarize_head(pattern: np.ndarray, layer: int = 0, head: int = 0, self_attention: bool = True) -> HeadSummary:
    """One head's (Tq, Tk) pattern -> its HeadSummary. `self_attention`: queries and keys are the same tokens."""
    a = np.asarray(pattern, dtype=np.float64)
    Tq, Tk = a.shape
    rows = np.arange(1, Tq) if Tq > 1 else np.arange(Tq)  # leave out query 0 (see the module docstring)
    entropy = float(row_entropy(a).mean())
    first = float(a[rows, 0].mean())
    if not self_attention:
        return HeadSummary(layer, head, entropy, None, first, None)
    if Tq != Tk:
        raise ValueError(f"self-attention needs a square pattern, got {Tq} queries × {Tk} keys")
    prev = float(a[rows, rows - 1].mean()) if Tq > 1 else None
    own = float(a[rows, rows].mean())
    return HeadSummary(layer, head, entropy, prev, first, own)


def summarize(patterns: np.ndarray, self_attention: bool = True) -> list[HeadSummary]:
    """(L, nh, Tq, Tk) patterns of every layer and head -> one HeadSummary each, layer by layer."""
    L, nh = patterns.shape[:2]
    return [summarize_head(patterns[i, h], i, h, self_attention) for i in range(L) for h in range(nh)]


def top_attended(row: np.ndarray, tokens: list[str], k: int = 3) -> list[Attended]:
    """The k keys with the largest weights in one (Tk,) pattern row, largest first (ties: earlier key first).

    >>> [a.token for a in top_attended(np.array([0.1, 0.6, 0.3]), ["a", "b", "c"], 2)]
    ['b', 'c']
    """
    row = np.asarray(row, dtype=np.float64)
    if len(tokens) != row.shape[-1]:
        raise ValueError(f"{len(tokens)} token labels for a row of {row.shape[-1]} keys")
    order = np.argsort(-row, kind="stable")[: max(k, 0)]
    return [Attended(int(j), tokens[j], float(row[j])) for j in order]


# --- masks and the matrices to plot


def allowed_cells(mask: str, Tq: int, Tk: int) -> np.ndarray:
    """(Tq, Tk) bool: True where a query may see a key under `mask` (a kqv.nn.masks name), for a whole sequence."""
    q_pos = torch.arange(Tk - Tq, Tk)  # the last Tq positions: queries and keys of one sequence line up at the end
    allowed = allowed_positions(mask, q_pos, torch.arange(Tk))
    return np.ones((Tq, Tk), dtype=bool) if allowed is None else allowed.numpy()


def check_pattern(pattern: np.ndarray, allowed: np.ndarray | None = None, atol: float = ROW_SUM_TOLERANCE) -> None:
    """Raise ValueError unless every row sums to 1 and masked cells hold 0 (pattern (…, Tq, Tk), allowed (Tq, Tk))."""
    p = np.asarray(pattern, dtype=np.float64)
    sums = p.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=atol):
        worst = float(np.abs(sums - 1.0).max())
        raise ValueError(f"attention rows must sum to 1; one is off by {worst:.2e}")
    if allowed is not None and np.abs(p[..., ~allowed]).max(initial=0.0) > atol:
        raise ValueError("a masked cell has attention weight; the pattern and the mask disagree")


def masked_pattern(pattern: np.ndarray, allowed: np.ndarray | None) -> np.ma.MaskedArray:
    """One head's (Tq, Tk) pattern as the matrix to draw: cells the mask forbids are hidden, the rest shown.

    Only a mask that forbids cells hides any: the causal triangle of a GPT or a decoder, never anything
    of an encoder's self-attention or of cross-attention (their mask is "none", `allowed` all True).
    """
    check_pattern(pattern, allowed)
    hidden = np.zeros(np.shape(pattern), dtype=bool) if allowed is None else ~allowed
    return np.ma.masked_array(np.asarray(pattern, dtype=np.float64), mask=hidden)


# --- token labels


def _gpt2_byte_decoder() -> dict[str, int]:
    """Byte-level BPE spells each byte as one printable character; this maps such a character back to its byte.

    GPT-2's table: the 188 bytes that print as themselves ('!'…'~', '¡'…'¬', '®'…'ÿ') keep their
    character; the other 68 (space, control bytes, …) take chr(256), chr(257), … in byte order,
    so a leading space shows as 'Ġ' (chr(256 + 32)).
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in keep}
    moved = (b for b in range(256) if b not in table.values())
    table.update({chr(256 + n): b for n, b in enumerate(moved)})
    return table


_BYTE_OF = _gpt2_byte_decoder()


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """The text of each token on its own: a character, or a BPE piece (" it" with its leading space).

    A BPE piece that holds part of a multi-byte character shows the bytes it has as escapes ("\\xc3").
    Special tokens keep their names ("<s>", "</s>").
    """
    if getattr(tokenizer, "kind", None) != "bpe":
        return [tokenizer.decode([i]) for i in ids]
    out = []
    for i in ids:
        piece = tokenizer.hf.id_to_token(int(i))
        if all(ch in _BYTE_OF for ch in piece):
            piece = bytes(_BYTE_OF[ch] for ch in piece).decode("utf-8", errors="backslashreplace")
        out.append(piece)
    return out


_SHOWN = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def token_label(text: str) -> str:
    """A token's text made visible: a space is '␣', a newline '\\n', other invisible characters escaped.

    >>> token_label(" it"), token_label("\\n"), token_label("")
    ('␣it', '\\\\n', '∅')
    """
    shown = (_SHOWN.get(c) or (c if c.isprintable() else c.encode("unicode_escape").decode()) for c in text)
    return "".join(shown) or "∅"


def word_around(texts: list[str], index: int, standalone: frozenset[str] = frozenset()) -> str:
    """The whitespace-delimited word of the text that token `index` belongs to (its own text if it is whitespace).

    For a char model it names what a single letter is part of: ("p","i","z","z","a"), index 2 -> "pizza".
    Tokens whose text is in `standalone` (special tokens: "</s>") are words of their own, never glued to a
    neighbour.
    """
    own = texts[index]
    if own in standalone or not own.strip():
        return own
    texts = [" " * len(t) if t in standalone else t for t in texts]  # same lengths, so the offsets hold
    start = sum(len(t) for t in texts[:index])
    full = "".join(texts)
    lo = start + (len(own) - len(own.lstrip()))  # skip a BPE piece's leading space
    hi = start + len(own.rstrip())
    while lo > 0 and not full[lo - 1].isspace():
        lo -= 1
    while hi < len(full) and not full[hi].isspace():
        hi += 1
    return full[lo:hi]


# --- choosing the query token


def find_query(texts: list[str], query: str, what: str = "text") -> QueryMatch:
    """The token that `--query-token WORD` names: WORD as a whole word of the text, case-insensitive.

    The match is on the joined text, not token by token, so it works for any tokenizer: in a BPE
    model "it" is one token (" it"), in a char model two ("i", "t"); the query is the last token of
    the occurrence, where the model has read all of it. If the word occurs several times, the last
    occurrence is used (`--query-index` picks any other). UserError when it does not occur at all.
    """
    word = query.strip()
    if not word:
        raise UserError("--query-token is empty; give a word of the text, e.g. --query-token it")
    full = "".join(texts)
    ends = np.cumsum([len(t) for t in texts])  # token i covers characters [ends[i] - len, ends[i])
    pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)
    matches = list(pattern.finditer(full))
    if not matches:
        shown = " ".join(f"{i}:{token_label(t)}" for i, t in enumerate(texts))
        raise UserError(
            f"--query-token {word!r} is not a word of the {what}; its tokens are {shown} "
            "(match a whole word, or pick a position with --query-index N)"
        )
    last = matches[-1]
    first_token = int(np.searchsorted(ends, last.start(), side="right"))
    last_token = int(np.searchsorted(ends, last.end() - 1, side="right"))
    return QueryMatch(last_token, first_token, len(matches))


def resolve_index(n: int, index: int, what: str = "text") -> int:
    """`--query-index N` over n tokens -> 0 … n−1; negative counts from the end (−1 = the last token)."""
    if not -n <= index < n:
        raise UserError(f"--query-index {index} is out of range: the {what} has {n} tokens (0 … {n - 1}, or −1 …)")
    return index % n


# --- who looks where: the weight each head puts on each word


@dataclass(frozen=True)
class Word:
    """One whole word of a token list: its text and the tokens that hold some of its characters."""

    text: str
    tokens: tuple[int, ...]  # first … last token that overlaps the word, in order


@dataclass(frozen=True)
class HeadWeight:
    """The attention weight one head puts, from the query, on one word (its tokens' weights summed)."""

    layer: int
    head: int
    weight: float


@dataclass(frozen=True)
class WordLook:
    """One word (all its occurrences the query may see) and every head's weight on it, largest first."""

    word: str  # lower-cased: "The" and "the" are one word
    tokens: tuple[int, ...]  # the key tokens whose weights are summed
    heads: tuple[HeadWeight, ...]  # every (layer, head), largest weight first (ties: earlier head first)

    @property
    def best(self) -> float:
        return self.heads[0].weight if self.heads else 0.0


_WORD = re.compile(r"\w+")


def words_of(texts: list[str], standalone: frozenset[str] = frozenset()) -> list[Word]:
    """The whole words (runs of letters, digits, "_") of a token list, in order, with the tokens they lie in.

    Matched on the joined text, so it works for any tokenizer: a char model's "pizza" is tokens
    ("p","i","z","z","a"), a BPE model's one token " pizza". Special tokens ("</s>") hold no word.

    >>> [(w.text, w.tokens) for w in words_of(["p", "i", "e", " ", "i", "t"])]
    [('pie', (0, 1, 2)), ('it', (4, 5))]
    """
    texts = [" " * len(t) if t in standalone else t for t in texts]  # same lengths, so the offsets hold
    ends = np.cumsum([len(t) for t in texts])  # token i covers characters [ends[i] - len(texts[i]), ends[i])
    out = []
    for match in _WORD.finditer("".join(texts)):
        first = int(np.searchsorted(ends, match.start(), side="right"))
        last = int(np.searchsorted(ends, match.end() - 1, side="right"))
        out.append(Word(match.group(), tuple(range(first, last + 1))))
    return out


def words_before(texts: list[str], query: int, standalone: frozenset[str] = frozenset()) -> list[Word]:
    """The words of a self-attention's text that end before the query's own word begins (its earlier words)."""
    words = words_of(texts, standalone)
    own = next((w for w in words if query in w.tokens), None)
    start = own.tokens[0] if own is not None else query
    return [w for w in words if w.tokens[-1] < start]


def word_looks(patterns: np.ndarray, query: int, words: list[Word]) -> list[WordLook]:
    """(L, nh, Tq, Tk) patterns, a query row and the key words -> each distinct word and every head's weight on it.

    A word of several tokens gets the sum of its tokens' weights; a word that occurs more than once
    (case-insensitive) gets the sum over its occurrences. The words keep the order of their first occurrence.
    """
    p = np.asarray(patterns, dtype=np.float64)
    L, nh = p.shape[:2]
    grouped: dict[str, list[int]] = {}
    for w in words:
        grouped.setdefault(w.text.lower(), []).extend(w.tokens)
    out = []
    for word, tokens in grouped.items():
        tokens = sorted(set(tokens))
        weights = p[:, :, query, tokens].sum(axis=-1)  # (L, nh)
        order = np.argsort(-weights.reshape(-1), kind="stable")
        heads = tuple(HeadWeight(int(i // nh), int(i % nh), float(weights.reshape(-1)[i])) for i in order)
        out.append(WordLook(word, tuple(tokens), heads))
    return out


def pick_words(looks: list[WordLook], k: int = 3, asked: list[str] = ()) -> list[WordLook]:
    """The k words with the largest best-head weight (ties: earlier word first), then any asked word not yet in.

    Words in `asked` that are not among `looks` are left out (the caller says why).
    """
    picked = sorted(looks, key=lambda w: -w.best)[: max(k, 0)]  # (a stable sort: ties keep the text's order)
    by_word = {w.word: w for w in looks}
    for word in asked:
        look = by_word.get(word.lower())
        if look is not None and look not in picked:
            picked.append(look)
    return picked


# --- removing heads: the next-token probabilities without them


def next_token_probs(model, ids: list[int], position: int, remove: list[tuple[int, int]] = ()) -> torch.Tensor:
    """A GPT's next-token probabilities (V,) at `position` of `ids`, with each (layer, head) in `remove` removed.

    A removed head's output z (pattern·V, hook point "blocks.{L}.attn.z", (B, nh, T, hs)) is set to 0 at
    every position, so it adds nothing to the residual stream. No heads removed: the plain forward pass.
    Runs in eval mode without gradients; the model's mode is restored afterwards.
    """

    by_layer: dict[int, list[int]] = {}
    for layer, head in remove:
        by_layer.setdefault(int(layer), []).append(int(head))

    def zero(heads: list[int]):
        def fn(z: torch.Tensor, name: str) -> torch.Tensor:
            z = z.clone()
            z[:, heads] = 0
            return z

        return fn

    fns = {f"blocks.{layer}.attn.z": zero(heads) for layer, heads in by_layer.items()}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with hooks(model, fns), torch.no_grad():
            logits = model(torch.tensor([ids], device=device)).logits[0, position]
    finally:
        model.train(was_training)
    return torch.softmax(logits.double(), dim=-1).cpu()


@dataclass(frozen=True)
class ProbChange:
    """One next-token candidate: its id, its label and its probability before and after an ablation."""

    id: int
    token: str
    before: float
    after: float


def prob_changes(before: torch.Tensor, after: torch.Tensor, label, k: int = 3) -> list[ProbChange]:
    """The k most likely tokens before, then those of the k most likely after not yet listed, with both values.

    `label(i)` is token i's text as shown. Ties keep the lower id first.
    """
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    ids = list(np.argsort(-b, kind="stable")[:k]) + list(np.argsort(-a, kind="stable")[:k])
    return [ProbChange(int(i), label(int(i)), float(b[i]), float(a[i])) for i in dict.fromkeys(int(i) for i in ids)]

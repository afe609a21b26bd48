"""Batches of sentence pairs for the translation Transformer, sized by a token budget.

Sentences are grouped with others of similar length so that little of a batch is
padding, and a batch holds as many as fit in `max_tokens` padded positions
("Attention Is All You Need", section 5.1: "Sentence pairs were batched together by
approximate sequence length. Each training batch contained a set of sentence pairs
containing approximately 25000 source tokens and 25000 target tokens").

One pair, source ids [5, 6, 7] and target ids [8, 9], with bos 1, eos 2, pad 0, in a
batch whose longest source has 4 ids and longest target 3:

    src     = 5 6 7 2 0      source + eos, padded              (B, S)   S = 4 + 1
    tgt_in  = 1 8 9 0        bos + target, padded: the decoder input  (B, T)   T = 3 + 1
    tgt_out = 8 9 2 0        target + eos, padded: what it must predict (B, T)

so `tgt_out[:, t]` is the token that follows `tgt_in[:, :t+1]`. A batch of B pairs
stays within the budget when B × max(S, T) ≤ max_tokens; a single pair longer than
the budget still makes a batch of one.
"""

import hashlib
from typing import NamedTuple

import numpy as np
import torch

from kqv.errors import UserError

Example = tuple[list[int], list[int]]  # (source ids, target ids), without bos or eos
BATCHES_PER_POOL = 100  # examples are sorted by length within pools of about this many batches


class TranslationBatch(NamedTuple):
    src: torch.Tensor  # (B, S) int64: source ids + eos, right-padded with pad_id
    tgt_in: torch.Tensor  # (B, T) int64: bos + target ids, right-padded
    tgt_out: torch.Tensor  # (B, T) int64: target ids + eos, right-padded; pad_id marks positions not to score
    pad_id: int

    @property
    def n_tokens(self) -> int:
        """Target tokens to predict (eos included, padding not): what a per-token loss averages over."""
        return int((self.tgt_out != self.pad_id).sum())

    def to(self, device: torch.device | str) -> "TranslationBatch":
        return self._replace(src=self.src.to(device), tgt_in=self.tgt_in.to(device), tgt_out=self.tgt_out.to(device))


class _Packed:
    """All examples' ids in two flat arrays, with offsets, so a batch is gathered without per-token loops."""

    def __init__(self, examples: list[Example], pad_id: int, bos_id: int, eos_id: int):
        if not examples:
            raise UserError("no sentence pairs to batch; the corpus or split is empty")
        self.src_len = np.fromiter((len(src) for src, _ in examples), dtype=np.int64, count=len(examples))
        self.tgt_len = np.fromiter((len(tgt) for _, tgt in examples), dtype=np.int64, count=len(examples))
        self.src_start = np.cumsum(self.src_len) - self.src_len
        self.tgt_start = np.cumsum(self.tgt_len) - self.tgt_len
        self.src_ids = np.fromiter((i for src, _ in examples for i in src), dtype=np.int64, count=self.src_len.sum())
        self.tgt_ids = np.fromiter((i for _, tgt in examples for i in tgt), dtype=np.int64, count=self.tgt_len.sum())
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        # The padded length an example needs: its longer side plus bos or eos.
        self.width = np.maximum(self.src_len, self.tgt_len) + 1

    def __len__(self) -> int:
        return len(self.src_len)

    def fingerprint(self) -> str:
        """sha256 of every id and length: the same examples in the same order give the same value."""
        digest = hashlib.sha256()
        for array in (self.src_len, self.tgt_len, self.src_ids, self.tgt_ids):
            digest.update(array.tobytes())
        return digest.hexdigest()

    def by_length(self, indices: np.ndarray) -> np.ndarray:
        """`indices` sorted by source length, then target length (stable, so ties keep their order)."""
        return indices[np.lexsort((self.tgt_len[indices], self.src_len[indices]))]

    def cut(self, indices: np.ndarray, max_tokens: int) -> list[np.ndarray]:
        """Consecutive runs of `indices` whose count × longest padded length stays within `max_tokens`."""
        batches, start, longest = [], 0, 0
        widths = self.width[indices].tolist()
        for end, width in enumerate(widths):
            longest = max(longest, width)
            if (end - start + 1) * longest > max_tokens and end > start:
                batches.append(indices[start:end])
                start, longest = end, width
        batches.append(indices[start:])
        return batches

    def collate(self, indices: np.ndarray) -> TranslationBatch:
        rows = np.arange(len(indices))
        src = self._padded(self.src_ids, self.src_start[indices], self.src_len[indices], offset=0)  # (B, S)
        src[rows, self.src_len[indices]] = self.eos_id
        tgt_out = self._padded(self.tgt_ids, self.tgt_start[indices], self.tgt_len[indices], offset=0)  # (B, T)
        tgt_out[rows, self.tgt_len[indices]] = self.eos_id
        tgt_in = self._padded(self.tgt_ids, self.tgt_start[indices], self.tgt_len[indices], offset=1)  # (B, T)
        tgt_in[:, 0] = self.bos_id
        return TranslationBatch(torch.from_numpy(src), torch.from_numpy(tgt_in), torch.from_numpy(tgt_out), self.pad_id)

    def _padded(self, ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray, offset: int) -> np.ndarray:
        """(B, max length + 1) of pad_id with row b's ids written from column `offset`."""
        width = int(lengths.max()) + 1
        out = np.full((len(lengths), width), self.pad_id, dtype=np.int64)
        position = np.arange(width - offset)  # (L,)
        inside = position < lengths[:, None]  # (B, L) True where a row has an id
        out[:, offset:][inside] = ids[(starts[:, None] + position)[inside]]  # row-major order matches the flat ids
        return out


class TokenBudgetBatcher:
    """Endless training batches of similar-length pairs within a token budget, reproducible from `seed`.

    Each epoch shuffles the examples (from `seed` and the epoch number), sorts pools of
    about 100 batches' worth by length, cuts each pool into batches within `max_tokens`,
    and shuffles the order of the batches. `state_dict()` records the epoch and the
    position in it, so a batcher restored with `load_state_dict` yields exactly the
    batches the original would have yielded next.
    """

    def __init__(self, examples: list[Example], max_tokens: int, seed: int, pad_id: int, bos_id: int, eos_id: int):
        if max_tokens < 1:
            raise UserError(f"max_tokens must be at least 1; got {max_tokens}")
        self.data = _Packed(examples, pad_id, bos_id, eos_id)
        self.max_tokens = max_tokens
        self.seed = seed
        mean_width = float(self.data.width.mean())
        self.pool_size = max(1, round(BATCHES_PER_POOL * max_tokens / mean_width))
        self._fingerprint = self.data.fingerprint()
        self._start_epoch(0)

    @property
    def batches_in_epoch(self) -> int:
        """How many batches the current epoch has (it varies a little from epoch to epoch)."""
        return len(self._plan)

    def next_batch(self) -> TranslationBatch:
        if self.position == len(self._plan):
            self._start_epoch(self.epoch + 1)
        indices = self._plan[self.position]
        self.position += 1
        return self.data.collate(indices)

    def _start_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # the epoch of the batches being yielded; the next one starts when it is used up
        self.position = 0  # batches of this epoch already yielded
        rng = np.random.default_rng([self.seed & 0xFFFF_FFFF_FFFF_FFFF, epoch])
        shuffled = rng.permutation(len(self.data))
        plan = []
        for start in range(0, len(shuffled), self.pool_size):
            pool = self.data.by_length(shuffled[start : start + self.pool_size])
            plan.extend(self.data.cut(pool, self.max_tokens))
        self._plan = [plan[i] for i in rng.permutation(len(plan))]

    def state_dict(self) -> dict:
        """JSON-able: where in which epoch the batcher is, and what data and budget that applies to."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "n_examples": len(self.data),
            "max_tokens": self.max_tokens,
            "examples_sha256": self._fingerprint,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "epoch", "position", "n_examples", "max_tokens"):
            value = state[key]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
                raise ValueError(f"its {key} is not a whole number ≥ 0")
        if not isinstance(state["examples_sha256"], str):
            raise ValueError("its examples_sha256 is not a string")
        saved = (state["n_examples"], state["max_tokens"])
        if saved != (len(self.data), self.max_tokens):
            raise UserError(
                f"cannot resume the batch order: it was saved for {saved[0]:,} examples and max_tokens {saved[1]:,}, "
                f"but this run has {len(self.data):,} and {self.max_tokens:,}; "
                "resume with the original corpus, split and max_tokens"
            )
        if state["examples_sha256"] != self._fingerprint:
            raise UserError(
                "cannot resume the batch order: the training examples differ from those it was saved for "
                "(another corpus, split or tokenizer); resume with the original ones"
            )
        self.seed = state["seed"]
        self._start_epoch(state["epoch"])
        if not 0 <= state["position"] <= len(self._plan):
            raise UserError(
                f"cannot resume the batch order: position {state['position']} is outside epoch "
                f"{state['epoch']}, which has {len(self._plan)} batches"
            )
        self.position = state["position"]


def fixed_batches(
    examples: list[Example], max_tokens: int, pad_id: int, bos_id: int, eos_id: int
) -> list[tuple[list[int], TranslationBatch]]:
    """Every example once, in batches of similar length within `max_tokens`, the same on every call.

    Each batch comes with the indices of its examples in `examples`, so outputs decoded
    batch by batch can be put back in the original order.
    """
    if max_tokens < 1:
        raise UserError(f"max_tokens must be at least 1; got {max_tokens}")
    data = _Packed(examples, pad_id, bos_id, eos_id)
    order = data.by_length(np.arange(len(data)))
    return [(indices.tolist(), data.collate(indices)) for indices in data.cut(order, max_tokens)]

"""Text corpora for the GPT: reading, tokenizing once into a cache, and random batches.

The pipeline, as in nanoGPT's `prepare.py` and `get_batch`:

1. `read_corpus` reads the embedded Tiny Shakespeare, a UTF-8 text file, or a
   folder of `.txt` files into one string.
2. `prepare_tokens` encodes it once, splits the ids into the first 90 % for
   training and the last 10 % for validation, and stores them as raw `train.bin`
   / `val.bin` (uint16, or uint32 for vocabularies over 65,536) with a
   `meta.json`. A later run with the same corpus and tokenizer memory-maps the
   files instead of encoding again.
3. `BatchSampler` draws B random windows of T + 1 tokens from a split; the
   input is the first T and the target the last T, so `y[b, t] == x[b, t + 1]`:

       tokens  5 9 2 7 4          x = [5 9 2 7]
       window  ^-------^          y = [9 2 7 4]
"""

import gzip
import hashlib
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from kqv.data.files import corpus_files, not_a_file, read_text_file, stat_input
from kqv.errors import UserError
from kqv.fileio import atomic_write_bytes

EMBEDDED_SOURCE = "embedded:tinyshakespeare"
EMBEDDED = {"tinyshakespeare": "tinyshakespeare.txt.gz", "kitchen": "kitchen.txt.gz"}  # in kqv/data/corpora/
TRAIN_FRACTION = 0.9
CACHE_FORMAT = "kqv.tokens/1"


@dataclass(frozen=True)
class Corpus:
    text: str = field(repr=False)
    source: str  # EMBEDDED_SOURCE, or the file or folder it was read from

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def read_corpus(path: str | Path | None = None) -> Corpus:
    """The embedded Tiny Shakespeare (None), another embedded corpus ("embedded:kitchen"),
    a UTF-8 text file, or a folder of `*.txt` files.

    A folder's files (searched recursively through links, hidden ones skipped) are read in
    order of their paths and joined with a newline between files. Anything that cannot be
    read whole is a one-line UserError before any text is read: a FIFO, a device or a socket
    (it may never end), a symlink loop, or in a folder a `.txt` name that is not a regular
    file or a link back to a folder that holds it.
    """
    if path is None:
        path = EMBEDDED_SOURCE
    if str(path).startswith("embedded:"):
        name = str(path)[len("embedded:") :]
        if name not in EMBEDDED:
            known = ", ".join(f"embedded:{n}" for n in EMBEDDED)
            raise UserError(f"{path}: no such embedded corpus; choose one of: {known}")
        raw = (files("kqv.data") / "corpora" / EMBEDDED[name]).read_bytes()
        return Corpus(gzip.decompress(raw).decode(), f"embedded:{name}")
    path = Path(path)
    missing = (
        "no such file or folder; give a UTF-8 text file or a folder of .txt files "
        "(or no path for the embedded Shakespeare)"
    )
    mode = stat_input(path, missing).st_mode
    if stat.S_ISDIR(mode):
        paths = corpus_files(path)
        if not paths:
            raise UserError(f"{path}: folder has no .txt files; a corpus folder holds UTF-8 text files ending in .txt")
        text = "\n".join(read_text_file(p) for p in paths)
    elif stat.S_ISREG(mode):
        text = read_text_file(path)
    else:
        raise not_a_file(path, mode, "give a UTF-8 text file or a folder of .txt files (save a stream to a file first)")
    if not text.strip():
        raise UserError(f"{path}: the corpus is empty or only whitespace; a GPT needs text to learn from")
    return Corpus(text, str(path))


def split_train_val(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first 90 % of the ids train, the last 10 % validate (nanoGPT's split)."""
    n_train = int(len(ids) * TRAIN_FRACTION)
    return ids[:n_train], ids[n_train:]


class Encoder(Protocol):
    """What `prepare_tokens` needs of a tokenizer (see kqv.tokenizer)."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def fingerprint(self) -> str: ...


@dataclass
class TokenData:
    train: np.ndarray  # (N_train,) token ids, a read-only memmap when cached
    val: np.ndarray  # (N_val,)
    vocab_size: int
    reused: bool  # True when the cache already held these tokens and nothing was encoded


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def prepare_tokens(corpus: Corpus, tokenizer: Encoder, cache_dir: str | Path | None) -> TokenData:
    """Token ids of `corpus`, split 90/10, cached in `cache_dir` (None: kept in memory only).

    The cache is `train.bin`, `val.bin` (raw ids in the machine's byte order) and
    `meta.json`; it is reused only when the corpus text and the tokenizer are the same and
    both files still have the sha256 recorded in meta.json (a damaged cache is encoded again).
    """
    meta = _cache_meta(corpus, tokenizer)
    if cache_dir is not None:
        cached = _load_cache(Path(cache_dir), meta)
        if cached is not None:
            return cached
    return _encode_tokens(corpus, tokenizer, cache_dir, meta)


def cached_tokens(corpus: Corpus, tokenizer: Encoder, cache_dir: str | Path) -> TokenData | None:
    """The tokens `prepare_tokens` cached in `cache_dir` for this corpus and tokenizer, or None; never writes."""
    return _load_cache(Path(cache_dir), _cache_meta(corpus, tokenizer))


def _cache_meta(corpus: Corpus, tokenizer: Encoder) -> dict:
    return {
        "format": CACHE_FORMAT,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "vocab_size": tokenizer.vocab_size,
        "train_fraction": TRAIN_FRACTION,
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "corpus_sha256": corpus.sha256,
    }


def _encode_tokens(corpus: Corpus, tokenizer: Encoder, cache_dir: str | Path | None, meta: dict) -> TokenData:
    dtype = np.dtype(meta["dtype"])
    ids = np.asarray(tokenizer.encode(corpus.text), dtype=dtype)
    train, val = split_train_val(ids)
    if cache_dir is None:
        return TokenData(train, val, tokenizer.vocab_size, reused=False)
    cache_dir = Path(cache_dir)
    (cache_dir / "meta.json").unlink(missing_ok=True)  # a crash below must not leave old meta beside new .bin files
    atomic_write_bytes(cache_dir / "train.bin", train.tobytes())
    atomic_write_bytes(cache_dir / "val.bin", val.tobytes())
    meta |= {"train_tokens": len(train), "val_tokens": len(val), "corpus_source": corpus.source}
    meta |= {"train_sha256": _sha256(train), "val_sha256": _sha256(val)}  # a damaged cache is encoded again
    atomic_write_bytes(cache_dir / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())
    return TokenData(
        _open_tokens(cache_dir / "train.bin", dtype, len(train)),
        _open_tokens(cache_dir / "val.bin", dtype, len(val)),
        tokenizer.vocab_size,
        reused=False,
    )


def _load_cache(cache_dir: Path, expected: dict) -> TokenData | None:
    """The cached tokens if meta.json matches `expected` and both files have the stated sizes."""
    try:
        meta = json.loads((cache_dir / "meta.json").read_bytes())
        if any(meta.get(key) != value for key, value in expected.items()):
            return None
        dtype = np.dtype(meta["dtype"])
        lengths = {"train": int(meta["train_tokens"]), "val": int(meta["val_tokens"])}
        if any((cache_dir / f"{split}.bin").stat().st_size != n * dtype.itemsize for split, n in lengths.items()):
            return None
        splits = {split: _open_tokens(cache_dir / f"{split}.bin", dtype, n) for split, n in lengths.items()}
        if any(meta.get(f"{split}_sha256") != _sha256(ids) for split, ids in splits.items()):
            return None  # a flipped byte in the ids (or a cache written before the checksums): encode again
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: encode again
    return TokenData(splits["train"], splits["val"], meta["vocab_size"], reused=True)


def _sha256(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids).data).hexdigest()


def _open_tokens(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=dtype)  # numpy cannot memory-map an empty file
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


class Batch(NamedTuple):
    x: torch.Tensor  # (B, T) int64 input ids
    y: torch.Tensor  # (B, T) int64 targets: y[:, t] == x[:, t + 1], the next token


class BatchSampler:
    """Random windows of `block_size + 1` tokens from one split, reproducible from `seed`.

    `state_dict()` holds the generator state, so a sampler restored with
    `load_state_dict` draws exactly the batches the original would have drawn next.

    With `shard=(rank, N)` (multi-process training) every process draws the same
    `batch_size` starts and keeps only its batch_size/N rows: together the N
    processes see exactly one process's batches, and the state does not depend on N.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        *,
        name: str = "training",
        shard: tuple[int, int] = (0, 1),
    ):
        """`name` ("training", "validation") says which split an error message is about."""
        if block_size < 1 or batch_size < 1:
            raise UserError(f"block_size and batch_size must be at least 1; got {block_size} and {batch_size}")
        rank, n = shard
        if not 0 <= rank < n or batch_size % n:
            raise ValueError(f"shard {shard} does not split batch_size {batch_size} evenly")
        self.rows = slice(rank * (batch_size // n), (rank + 1) * (batch_size // n))
        self.tokens = np.asarray(tokens)  # a plain ndarray view, still backed by the memmap
        if self.tokens.ndim != 1:
            raise ValueError(f"tokens must be 1-D, got shape {self.tokens.shape}")
        if len(self.tokens) < block_size + 1:
            raise UserError(
                f"the {name} split has {len(self.tokens)} tokens but needs more than block_size ({block_size}) "
                f"to make one example of {block_size} inputs and their targets; "
                "use a longer corpus or a smaller block_size"
            )
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.batches_drawn = 0
        self.generator = torch.Generator().manual_seed(seed)
        self._offsets = np.arange(block_size + 1)  # (T+1,)

    def next_batch(self) -> Batch:
        n_starts = len(self.tokens) - self.block_size  # the last window ends at the last token
        starts = torch.randint(n_starts, (self.batch_size,), generator=self.generator).numpy()  # (B,)
        starts = starts[self.rows]  # this process's rows: (B/N,)
        window = self.tokens[starts[:, None] + self._offsets]  # (B/N, T+1)
        window = torch.from_numpy(window.astype(np.int64))
        self.batches_drawn += 1
        return Batch(window[:, :-1].contiguous(), window[:, 1:].contiguous())  # (B/N, T), (B/N, T)

    def state_dict(self) -> dict:
        """JSON-able: the generator's state as a list of byte values, and what it applies to."""
        return {
            "seed": self.seed,
            "batches_drawn": self.batches_drawn,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "n_tokens": len(self.tokens),
            "generator": self.generator.get_state().tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        generator = state["generator"]
        size = self.generator.get_state().numel()
        if not (isinstance(generator, list) and len(generator) == size and all(_byte(b) for b in generator)):
            raise ValueError(f"its generator state is not {size} byte values")
        if not (_whole(state["seed"]) and _whole(state["batches_drawn"])):
            raise ValueError("its seed and batch count must be whole numbers ≥ 0")
        saved = (state["block_size"], state["batch_size"], state["n_tokens"])
        if saved != (self.block_size, self.batch_size, len(self.tokens)):
            raise UserError(
                f"cannot resume the batch order: it was saved for block_size {saved[0]}, batch_size {saved[1]} "
                f"and {saved[2]} tokens, but this run has {self.block_size}, {self.batch_size} and "
                f"{len(self.tokens)}; resume with the original settings and corpus"
            )
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.seed = state["seed"]
        self.batches_drawn = state["batches_drawn"]


def _byte(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def consecutive_batches(tokens: np.ndarray, block_size: int, batch_size: int) -> Iterator[Batch]:
    """Every token of a split, once: non-overlapping windows of block_size targets, batch_size at a time.

    The first token is only ever an input, and a tail shorter than block_size becomes a last,
    shorter window, so all len(tokens) − 1 targets are scored.
    """
    tokens = np.asarray(tokens)
    starts = list(range(0, len(tokens) - 1, block_size))  # windows [s, s + T], overlapping by their edge token
    for i in range(0, len(starts), batch_size):
        group = starts[i : i + batch_size]
        full = [s for s in group if s + block_size < len(tokens)]
        if full:
            window = torch.from_numpy(np.stack([tokens[s : s + block_size + 1] for s in full]).astype(np.int64))
            yield Batch(window[:, :-1].contiguous(), window[:, 1:].contiguous())  # (B, T), (B, T)
        for s in group[len(full) :]:  # the short tail, on its own
            window = torch.from_numpy(tokens[s:].astype(np.int64))[None]  # (1, t+1)
            yield Batch(window[:, :-1].contiguous(), window[:, 1:].contiguous())


def fixed_batches(
    tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    n_batches: int,
    seed: int,
    *,
    name: str = "validation",
    shard: tuple[int, int] = (0, 1),
) -> list[Batch]:
    """The same `n_batches` batches for a given seed every time: for comparable evaluations.

    `shard=(rank, N)`: this process's batch_size/N rows of each (see BatchSampler).
    """
    sampler = BatchSampler(tokens, block_size, batch_size, seed, name=name, shard=shard)
    return [sampler.next_batch() for _ in range(n_batches)]

"""Attention variants by name, and the lab's built-in grids.

A variant is one choice of score (kqv.nn.scores), mask (kqv.nn.masks) and positional encoding
(kqv.nn.positional), written `"score=dot;mask=causal;pos=rope"`. Keys left out take the baseline's
value, so `"mask=anticausal"` is the baseline with only its mask changed:

    >>> parse_variant("score=dot;pos=rope").label
    'dot · causal · rope'

The baseline is GPT-2's: scaled_dot, causal, learned positions.
"""

from dataclasses import dataclass
from functools import cache

from kqv.errors import UserError
from kqv.lab.grids import GRID_SPECS
from kqv.nn.masks import parse_mask, sees_future
from kqv.nn.positional import POSITIONAL
from kqv.nn.scores import SCORES

BASELINE = {"score": "scaled_dot", "mask": "causal", "pos": "learned"}


@dataclass(frozen=True)
class Variant:
    score: str = BASELINE["score"]
    mask: str = BASELINE["mask"]
    pos: str = BASELINE["pos"]
    question: str = ""  # the learner's question this variant answers (seed-questions grid)

    @property
    def spec(self) -> str:
        """The canonical string: parse_variant(v.spec) == v (question aside)."""
        return f"score={self.score};mask={self.mask};pos={self.pos}"

    @property
    def label(self) -> str:
        return f"{self.score} · {self.mask} · {self.pos}"

    @property
    def slug(self) -> str:
        """A folder name: 'dot-causal-rope', 'scaled_dot-window8-learned'."""
        return f"{self.score}-{self.mask.replace(':', '')}-{self.pos}"

    @property
    def overrides(self) -> list[str]:
        """`--set` overrides for kqv.train.gpt_run.train_gpt."""
        return [f"score={self.score}", f"mask={self.mask}", f"pos_encoding={self.pos}"]

    @property
    def leaks(self) -> bool:
        """True when the mask lets a position see the token it must predict."""
        return sees_future(self.mask)


def parse_variant(text: str, question: str = "") -> Variant:
    """`"score=dot;mask=window:8"` -> Variant; an unknown key or value is a one-line UserError."""
    values = dict(BASELINE)
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or key not in BASELINE:
            raise UserError(f"variant {text!r}: expected key=value parts with keys score, mask, pos; got {part!r}")
        values[key] = value
    if values["score"] not in SCORES:
        raise UserError(f"variant {text!r}: unknown score {values['score']!r}; choose one of {', '.join(SCORES)}")
    try:
        values["mask"] = parse_mask(values["mask"]).name
    except ValueError as exc:
        raise UserError(f"variant {text!r}: {exc}") from None
    if values["pos"] not in POSITIONAL:
        raise UserError(f"variant {text!r}: unknown pos {values['pos']!r}; choose one of {', '.join(POSITIONAL)}")
    return Variant(values["score"], values["mask"], values["pos"], question)


@cache
def grid_variants(name: str) -> tuple[Variant, ...]:
    if name not in GRID_SPECS:
        raise UserError(f"unknown grid {name!r}; choose one of {', '.join(GRID_SPECS)}")
    return tuple(parse_variant(spec, question) for spec, question in GRID_SPECS[name])


def __getattr__(name: str):
    if name == "GRIDS":  # every grid, parsed: {name: (Variant, …)}
        return {grid: grid_variants(grid) for grid in GRID_SPECS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

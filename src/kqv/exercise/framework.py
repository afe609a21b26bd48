"""What an exercise is made of: graded checks that compare a learner's function with kqv's, and say why.

An exercise (one module in kqv.exercise.exercises) names the functions a learner writes in one file and
a list of `Check`s, from the simplest (shapes on one tiny input) to the strongest (values on random
inputs, gradients against finite differences, an end-to-end run). A check receives the learner's
module and raises `Failure` with what was expected, what came back, and a hint chosen from the mistake
it recognises:

    def check_scores_are_scaled(learner):
        q, k, v = small_inputs()
        got = call(learner, "attention", q, k, v)
        expect_close(got, reference(q, k, v), "attention(q, k, v)",
                     hints=[(lambda: close(got, reference(q, k, v, scale=1.0)), "the scores are not divided by √d_k")])

`call` turns a learner's NotImplementedError into `NotImplemented` (reported as "not implemented yet") and
any other exception into a Failure naming the exception and the learner's line; `expect_shape` and
`expect_close` describe a mismatch as shapes, the first differing element and the relative error, and
try each (test, hint) pair in order so the first recognised mistake names itself.
"""

import importlib.util
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

Hint = tuple[Callable[[], bool], str]  # (does the learner's answer match this known mistake?, what to say)


class NotImplementedYet(Exception):
    """The learner's function still raises NotImplementedError: the check is reported as not started."""


class Failure(Exception):
    """A check failed: `message` (one line: what is wrong), `expected` / `got` (short descriptions), `hint`."""

    def __init__(self, message: str, expected: str = "", got: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message, self.expected, self.got, self.hint = message, expected, got, hint


@dataclass(frozen=True)
class Check:
    name: str  # short, stable: "shapes", "values", "gradient", "end to end"
    what: str  # one line: what is checked
    run: Callable[[object], None]  # run(learner_module) -> None, or raises Failure / NotImplementedYet
    slow: bool = False  # an end-to-end run: skipped by `kqv exercise list`'s quick status


@dataclass
class Outcome:
    check: str
    status: str  # "pass" | "fail" | "not implemented" | "error"
    message: str = ""
    expected: str = ""
    got: str = ""
    hint: str = ""
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


def learner_line(exc: BaseException, learner_file: str | None) -> str:
    """ " (line N of FILE)" for the innermost frame of the learner's file in the exception's traceback."""
    if learner_file is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == learner_file]
    return f" (line {frames[-1].lineno}: {frames[-1].line.strip()})" if frames else ""


def call(learner, name: str, *args, learner_file: str | None = None, **kwargs):
    """learner.name(*args, **kwargs); NotImplementedError -> NotImplementedYet, other exceptions -> Failure."""
    fn = getattr(learner, name, None)
    if fn is None:
        raise Failure(f"the file defines no {name}(); keep the skeleton's function names")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotImplementedYet(name) from None
    except (Failure, NotImplementedYet):
        raise
    except Exception as exc:  # the learner's bug: say which and where, never a traceback
        where = learner_line(exc, learner_file or getattr(learner, "__file__", None))
        raise Failure(f"{name}() raised {type(exc).__name__}: {exc}{where}") from None


def describe(x) -> str:
    """A short description of a value: its type, shape and dtype for arrays and tensors."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{type(x).__name__} of shape {tuple(x.shape)}, {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def as_array(x) -> np.ndarray | None:
    """numpy arrays and torch tensors (detached, on the CPU) as float64 numpy arrays; anything else None."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray | float | int | np.floating) or (isinstance(x, list) and x):
        try:
            return np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            return None
    return None


def close(got, expected, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Whether `got` equals `expected` in shape and values (within tolerance); never raises."""
    g, e = as_array(got), as_array(expected)
    return g is not None and e is not None and g.shape == e.shape and bool(np.allclose(g, e, rtol=rtol, atol=atol))


def first_hint(hints: Sequence[Hint]) -> str:
    for test, text in hints:
        try:
            if test():
                return text
        except Exception:  # a hint test that cannot even be evaluated does not match
            continue
    return ""


def expect_shape(got, shape: tuple[int, ...], what: str, hints: Sequence[Hint] = ()) -> None:
    g = as_array(got)
    if g is None or g.shape != tuple(shape):
        raise Failure(
            f"{what} has the wrong shape", f"shape {tuple(shape)}", describe(got) if g is None else f"shape {g.shape}",
            first_hint(hints),
        )  # fmt: skip


def expect_close(got, expected, what: str, hints: Sequence[Hint] = (), rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """A Failure describing how `got` differs from `expected`: shape, first differing element, relative error."""
    g, e = as_array(got), as_array(expected)
    if g is None:
        raise Failure(f"{what} should be an array", describe(expected), describe(got), first_hint(hints))
    if g.shape != e.shape:
        raise Failure(f"{what} has the wrong shape", f"shape {e.shape}", f"shape {g.shape}", first_hint(hints))
    if not np.isfinite(g).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(g))[0])
        message = f"{what} holds NaN or inf (first at index {bad})"
        raise Failure(message, "finite values", f"{g[bad]}", first_hint(hints))
    if np.allclose(g, e, rtol=rtol, atol=atol):
        return
    wrong = np.argwhere(~np.isclose(g, e, rtol=rtol, atol=atol))
    index = tuple(int(i) for i in wrong[0])
    relative = float(np.linalg.norm(g - e) / max(np.linalg.norm(e), 1e-30))
    raise Failure(
        f"{what} differs from the reference at {len(wrong)} of {e.size} elements (relative error {relative:.2e})",
        f"{e[index]:.6g} at index {index}", f"{g[index]:.6g}", first_hint(hints),
    )  # fmt: skip


def filled_in(skeleton: str, bodies: list[str]) -> str:
    """A reference file from its skeleton: each `raise NotImplementedError` line replaced by the next of `bodies`."""
    parts = skeleton.split("    raise NotImplementedError\n")
    if len(parts) != len(bodies) + 1:
        raise ValueError(f"the skeleton has {len(parts) - 1} bodies to fill, {len(bodies)} given")
    return "".join(part + body for part, body in zip(parts, [*bodies, ""], strict=True))


def load_learner(path: str | Path, name: str = "learner") -> ModuleType:
    """Import a learner's file by its path, as a fresh module (not cached in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_checks(checks: Sequence[Check], learner, *, slow: bool = True) -> list[Outcome]:
    """Every check in order on an imported learner module, in this process -> one Outcome each.

    (kqv exercise check runs this in a child process with a time limit; tests may call it directly.)"""
    outcomes = []
    for check in checks:
        if check.slow and not slow:
            continue
        start = time.perf_counter()
        try:
            check.run(learner)
            outcome = Outcome(check.name, "pass")
        except NotImplementedYet as exc:
            outcome = Outcome(check.name, "not implemented", f"{exc} is not implemented yet")
        except Failure as f:
            outcome = Outcome(check.name, "fail", f.message, f.expected, f.got, f.hint)
        except Exception as exc:  # a bug in the check's own use of the learner's objects: still one line
            outcome = Outcome(check.name, "error", f"{type(exc).__name__}: {exc}"[:300])
        outcome.seconds = time.perf_counter() - start
        outcomes.append(outcome)
    return outcomes

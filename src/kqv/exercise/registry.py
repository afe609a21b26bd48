"""The exercises in path order, found by name: one module each in kqv.exercise.exercises.

Each module defines NAME (the CLI name, kebab-case), STEP (the README step), TEACHES (one line), FILENAME
(the learner's file), SOLUTION (where kqv's own implementation lives: "src/kqv/…/file.py: Class.method, fn"),
skeleton() and reference() (the learner's file, untouched and solved) and CHECKS (simplest first).
"""

import ast
import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType

from kqv.errors import UserError

ORDER = [
    "backprop",
    "softmax-cross-entropy",
    "attention",
    "causal-mask",
    "positional-encoding",
    "multi-head",
    "kv-cache",
    "beam-search",
]
PACKAGE = "kqv.exercise.exercises"
CONTRACT = ("NAME", "STEP", "TEACHES", "FILENAME", "SOLUTION", "skeleton", "reference", "CHECKS")
FIRST_LINE = re.compile(r"#\s*kqv exercise:\s*([A-Za-z0-9_-]+)")


class ExerciseMissing(UserError):
    """An exercise of ORDER whose module is not written yet (under construction)."""


def module_name(name: str) -> str:
    """'softmax-cross-entropy' -> 'kqv.exercise.exercises.softmax_cross_entropy'."""
    return f"{PACKAGE}.{name.replace('-', '_')}"


def canonical(name: str) -> str:
    """The CLI name of `name` ('softmax_cross_entropy' and 'Softmax-Cross-Entropy' name the same exercise)."""
    wanted = name.strip().lower().replace("_", "-")
    if wanted not in ORDER:
        raise UserError(f"no exercise is called {name!r}; the exercises, in path order: {', '.join(ORDER)}")
    return wanted


def exercise(name: str) -> ModuleType:
    """The module of exercise `name` (kebab or snake case); UserError for an unknown name,
    ExerciseMissing for one whose module is still being written."""
    name = canonical(name)
    try:
        return importlib.import_module(module_name(name))
    except ModuleNotFoundError as exc:
        if exc.name != module_name(name):  # the module exists but one of its own imports is missing
            raise
        raise ExerciseMissing(
            f"exercise {name} is under construction: its module {module_name(name)} is not written yet"
        ) from None


def exercises() -> list[ModuleType]:
    """Every exercise module that exists, in path order (the ones under construction are left out)."""
    found = []
    for name in ORDER:
        try:
            found.append(exercise(name))
        except ExerciseMissing:
            continue
    return found


def contract_problems(module: ModuleType) -> list[str]:
    """What an exercise module gets wrong about the contract (names, first line, order of checks); [] if nothing."""
    problems = [f"{module.__name__} defines no {attr}" for attr in CONTRACT if not hasattr(module, attr)]
    if problems:
        return problems
    if module.NAME not in ORDER or module_name(module.NAME) != module.__name__:
        problems.append(f"{module.__name__}: NAME {module.NAME!r} does not match its module name")
    for what, text in (("skeleton()", module.skeleton()), ("reference()", module.reference())):
        if text.splitlines()[:1] != [f"# kqv exercise: {module.NAME}"]:
            problems.append(f"{module.__name__}: the first line of {what} is not '# kqv exercise: {module.NAME}'")
    names = [c.name for c in module.CHECKS]
    if len(set(names)) != len(names) or not names:
        problems.append(f"{module.__name__}: check names must be unique and there must be some: {names}")
    slow = [c.slow for c in module.CHECKS]
    if slow != sorted(slow):
        problems.append(f"{module.__name__}: slow checks come last")
    return problems


def exercise_of_file(path: str | Path) -> str:
    """The exercise a learner's file belongs to: its first line '# kqv exercise: NAME', else its file name."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    match = FIRST_LINE.match(first.strip())
    if match:
        return canonical(match.group(1))
    stem = path.stem.lower().replace("_", "-")
    if stem in ORDER:
        return stem
    raise UserError(
        f"{path} does not say which exercise it is: its first line should be '# kqv exercise: NAME' "
        f"(or pass --exercise NAME); the exercises: {', '.join(ORDER)}"
    )


def todo_functions(source: str) -> list[str]:
    """Names of the functions (and methods) whose body raises NotImplementedError: what the learner writes."""
    names = []

    def visit(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef):
                raises = [n for n in ast.walk(child) if isinstance(n, ast.Raise) and n.exc is not None]
                if any("NotImplementedError" in ast.unparse(r.exc) for r in raises):
                    names.append(f"{prefix}{child.name}")

    visit(ast.parse(source), "")
    return names


def solution_sources(module: ModuleType) -> list[tuple[str, str]]:
    """(label, source code) of each function named in the exercise's SOLUTION, read from kqv's own modules.

    "src/kqv/scratch/network.py: Network.backprop, Network.sgd_step" -> the two methods' source."""
    found = []
    for entry in module.SOLUTION:
        path, _, names = entry.partition(":")
        dotted = path.strip().removeprefix("src/").removesuffix(".py").replace("/", ".")
        try:
            owner = importlib.import_module(dotted)
        except ImportError:
            found.append((entry, f"(cannot import {dotted}: see {path.strip()} in kqv's repository)\n"))
            continue
        for qualname in [n.strip() for n in names.split(",") if n.strip()] or [None]:
            label = f"{path.strip()}: {qualname}" if qualname else path.strip()
            try:
                target = owner
                for part in (qualname or "").split(".") if qualname else []:
                    target = getattr(target, part)
                found.append((label, inspect.getsource(target)))
            except (AttributeError, OSError, TypeError) as exc:
                found.append((label, f"(its source is not available here: {exc})\n"))
    return found

"""kqv's packages import each other in one direction only: down this list, never up, never sideways.

    layer  packages                          what they are
    0      errors                            the one exception type for a user's mistakes
    1      fileio, progress, device, presets atomic files, progress bars, device and precision, TOML presets
    2      scratch                           step 1 in NumPy, depending on nothing but errors and files
    3      data, tokenizer                   corpora, batches, tokenizers
    4      nn                                attention, masks, scores, positions, blocks, hooks
    5      config                            the configs, which name the nn registries' entries they accept
    6      models                            the GPT, the encoder–decoder, GPT-2 conversion
    7      runs                              a run directory from start to end, loading any run
    8      generate                          sampling, beam search, translating sentences
    9      evaluate, inspect                 scores; the activation cache, patterns, explanations
    10     viz                               pictures (of inspect's patterns, of loss curves)
    11     families                          one adapter per model family, over all of the above
    12     train                             the training loop and the two trainings
    13     lab                               the attention lab, which trains
    14     exercise                          skeletons for the learner and the checker of their code
    15     serve                             the local page
    16     bench                             benchmarks, which may use anything below
    17     commands                          the command line's modules
    18     cli                               the command table
    19     __main__                          `python -m kqv`

Library modules import kqv at their top; only commands/ (and the entry point) import inside functions,
so that `kqv --help` stays fast. The test reads the source (nothing is imported).
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kqv"
LAYERS = [
    {"errors"},
    {"fileio", "progress", "device", "presets"},
    {"scratch"},
    {"data", "tokenizer"},
    {"nn"},
    {"config"},
    {"models"},
    {"runs"},
    {"generate"},
    {"evaluate", "inspect"},
    {"viz"},
    {"families"},
    {"train"},
    {"lab"},
    {"exercise"},
    {"serve"},
    {"bench"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {package: i for i, layer in enumerate(LAYERS) for package in layer}
LAZY_OK = {"commands", "cli", "__main__"}  # --help speed: they import the rest inside functions


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kqv"


def kqv_imports(path: Path, root: Path = SRC):
    """(line, imported kqv module, inside a function?) for each import statement of the file."""
    me = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, in_function) for a in child.names if a.name.startswith("kqv."))
            elif isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:
                    base = me.split(".")[: -child.level] if path.name != "__init__.py" else me.split(".")
                    module = ".".join([*base, module] if module else base)
                if module.startswith("kqv."):
                    found.append((child.lineno, module, in_function))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def modules():
    return sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer():
    packages = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in modules()} - {"__init__"}
    assert packages <= set(LAYER_OF), f"add these to LAYERS: {sorted(packages - set(LAYER_OF))}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_run_down_the_layers_only(path):
    source = path.relative_to(SRC).parts[0].removesuffix(".py")
    wrong = []
    for line, module, _ in kqv_imports(path):
        target = package_of(module)
        if target in ("kqv", source):
            continue
        if LAYER_OF[target] >= LAYER_OF[source]:
            wrong.append(f"line {line}: {source} (layer {LAYER_OF[source]}) imports {module} ({LAYER_OF[target]})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_library_modules_import_kqv_at_their_top(path):
    source = path.relative_to(SRC).parts[0].removesuffix(".py")
    if source in LAZY_OK:
        return
    inside = [f"line {line}: {module}" for line, module, in_function in kqv_imports(path) if in_function]
    assert not inside, "move these imports to the top of the module:\n" + "\n".join(inside)


def test_nothing_below_train_imports_train():
    """The order's main promise, spelled out: models, inspect, serve and generate never import kqv.train."""
    for package in ("models", "inspect", "serve", "generate", "runs", "families", "evaluate"):
        for path in sorted((SRC / package).rglob("*.py")):
            assert not [m for _, m, _ in kqv_imports(path) if m.startswith("kqv.train")], path


def test_the_checker_sees_wrong_imports(tmp_path):
    """Made-up modules of nn: one imports kqv.train inside a function, one a sibling by a relative import."""
    root = tmp_path / "kqv"
    (root / "nn").mkdir(parents=True)
    (root / "nn" / "bad.py").write_text("def f():\n    from kqv.train.loop import Trainer\n")
    (root / "nn" / "rel.py").write_text("from ..config import GPTConfig\nfrom . import masks\n")
    assert kqv_imports(root / "nn" / "bad.py", root) == [(2, "kqv.train.loop", True)]
    assert kqv_imports(root / "nn" / "rel.py", root) == [(1, "kqv.config", False), (2, "kqv.nn", False)]
    assert LAYER_OF["train"] > LAYER_OF["nn"] and LAYER_OF["config"] > LAYER_OF["nn"]


def test_every_folder_of_modules_is_a_package():
    """A folder of modules without __init__.py is left out of an installed kqv (setuptools finds packages only)."""
    folders = {p.parent for p in modules()}
    assert not [str(f.relative_to(SRC)) for f in folders if not (f / "__init__.py").is_file()]

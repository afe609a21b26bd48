"""The import graph between kqv's packages, read from the source (nothing is imported).

    python scripts/import_graph.py            # package -> packages it imports, and the counts
    python scripts/import_graph.py --json

A package is the first part after `kqv.` (`kqv.train.loop` is in `train`; `kqv/config.py` is `config`).
Each edge counts the import statements; imports inside functions are counted apart, since they are how
an arrow can hide. Cycles between packages are listed.
"""

import argparse
import ast
import json
import pathlib
import sys
from collections import defaultdict

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "kqv"


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "kqv" and len(parts) > 1 else ("kqv" if module == "kqv" else None)


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """(imported kqv module, inside a function?) for every import statement of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path).split(".")
    is_package = path.name == "__init__.py"
    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names if a.name.startswith("kqv"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module
                    base = me if is_package else me[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("kqv"):
                    found.append((target, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def graph() -> dict:
    edges: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # [top-level, inside functions]
    for path in sorted(SRC.rglob("*.py")):
        source = package_of(module_name(path))
        for target, in_function in imports(path):
            dest = package_of(target)
            if dest is None or dest == source or dest == "kqv":
                continue
            edges[(source, dest)][1 if in_function else 0] += 1
    return edges


def cycles(edges) -> list[tuple[str, str]]:
    return sorted({tuple(sorted((a, b))) for (a, b) in edges if (b, a) in edges})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    edges = graph()
    total = sum(sum(v) for v in edges.values())
    inside = sum(v[1] for v in edges.values())
    if args.json:
        print(json.dumps({"edges": {f"{a} -> {b}": v for (a, b), v in sorted(edges.items())}, "cycles": cycles(edges)}))
        return 0
    by_source = defaultdict(list)
    for (a, b), (top, fn) in sorted(edges.items()):
        by_source[a].append(f"{b} ({top}{f' + {fn} in functions' if fn else ''})")
    for a in sorted(by_source):
        print(f"{a:10} -> {', '.join(by_source[a])}")
    print(f"\n{total} imports between packages, {inside} of them inside functions")
    found = cycles(edges)
    print("cycles: " + (", ".join(f"{a} <-> {b}" for a, b in found) if found else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

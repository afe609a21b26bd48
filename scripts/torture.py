"""Try to break kqv the way a demanding or adversarial user would, and print what survived.

    python scripts/torture.py --quick          # the bounded form CI runs (a few minutes on 2 cores)
    python scripts/torture.py                  # more trials of each scenario
    python scripts/torture.py --only runs,api  # some parts only

Each part lives in scripts/torture_cases/ and returns rows (scenario, tried, survived, notes):

    runs       SIGKILL / SIGINT / SIGTERM at random moments (start-up included) then resume, bit for bit;
               two writers on one run directory; bit flips and truncations of every run file; NaN weights,
               edited trainer states and config fields; a full disk; bad --set values
    corpora    FIFOs, /dev/zero, symlink loops, empty and binary files, a no-space run, one enormous line
    sampling   cached = recomputed generation past the context for every mask × positional encoding ×
               window; extreme temperatures, seeds and top-p / top-k through `kqv gpt sample`
    decoding   greedy and beam search never emit <pad> or <s>; beam 1 = greedy; log-probs = teacher forcing
    api        `kqv serve`'s API: broken bodies, oversized bodies, extreme sampling values, unknown and
               path-like model ids, unknown routes; every error one line, every stream complete

"Survived" means exactly the right outcome: a one-line error with exit code 2 and nothing lost or left
behind, or a correct result — never a traceback. The script exits 1 when any trial did not survive.
"""

import argparse
import importlib
import json
import os
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
PARTS = ("runs", "corpora", "sampling", "decoding", "api")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the bounded form (fewer trials)")
    parser.add_argument("--only", help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON: every row")
    args = parser.parse_args()
    parts = PARTS if not args.only else tuple(p.strip() for p in args.only.split(","))
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    os.environ.setdefault("KQV_NO_PROGRESS", "1")
    sys.path.insert(0, str(HERE))

    rows, started = [], time.perf_counter()
    for part in parts:
        module = importlib.import_module(f"torture_cases.{part}")
        with tempfile.TemporaryDirectory(prefix=f"kqv-torture-{part}-") as work:
            t0 = time.perf_counter()
            try:
                found = module.scenarios(args.quick, pathlib.Path(work))
            except Exception as exc:  # a part that cannot run at all is a failure, shown as one row
                found = [(f"{part}: could not run", 1, 0, [f"{type(exc).__name__}: {exc}"])]
            print(f"{part}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        rows += found

    width = max(len(r[0]) for r in rows)
    print(f"{'scenario':<{width}}  {'tried':>5}  {'survived':>8}")
    for name, tried, survived, _ in rows:
        mark = "" if survived == tried else "  <-- FAILED"
        print(f"{name:<{width}}  {tried:>5}  {survived:>8}{mark}")
    failed = [(name, notes) for name, tried, survived, notes in rows if survived != tried]
    for name, notes in failed:
        print(f"\n{name}:")
        for note in notes[:10]:
            print(f"  - {note}")
        if len(notes) > 10:
            print(f"  … and {len(notes) - 10} more")
    total, survived = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"\n{survived} of {total} trials survived in {time.perf_counter() - started:.0f} s")
    if args.json:
        print(json.dumps([{"scenario": n, "tried": t, "survived": s, "notes": no} for n, t, s, no in rows]))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

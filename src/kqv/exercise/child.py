"""The checker's child process: import a learner's file and run an exercise's checks on it, one at a time.

    python -m kqv.exercise.child NAME FILE RESULTS_PATH [--quick]

kqv.exercise.runner starts it and watches RESULTS_PATH, which gets one JSON object per line, flushed at once:

    {"event": "ready", "checks": [...]}                     the exercise is imported, its checks listed
    {"event": "started", "check": "import"}                 importing the learner's file
    {"event": "started", "check": "shapes"}                 then, for each check, its start …
    {"event": "outcome", "check": "shapes", "status": …}    … and its outcome (framework.Outcome's fields)
    {"event": "done"}

A "started" line without its outcome tells the parent which check hung or ended the process. The learner's
prints go to this process's stdout and stderr, which the parent drains and caps; sys.exit() and any other
exception inside a check or at import become an outcome, never this process's exit.
"""

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from kqv.exercise.framework import Outcome, learner_line, load_learner, run_checks
from kqv.exercise.registry import exercise

IMPORT = "import"  # the name of the pseudo-check that imports the learner's file


def escaped(exc: BaseException, check: str, learner_file: str, seconds: float) -> Outcome:
    """An Outcome for what framework.run_checks lets through: SystemExit, KeyboardInterrupt and their kin."""
    where = learner_line(exc, learner_file)
    if isinstance(exc, SystemExit):
        message = (
            f"the code called sys.exit({exc.code!r}){where}: nothing can be checked after that; "
            'remove the call (or put it under `if __name__ == "__main__":`)'
        )
    else:
        message = f"the code raised {type(exc).__name__}{f': {exc}' if str(exc) else ''}{where}"
    return Outcome(check, "error", message[:300], seconds=seconds)


def import_outcome(path: str) -> tuple[object | None, Outcome | None]:
    """(the learner's module, None), or (None, an Outcome naming the exception and the line) if importing fails."""
    start = time.perf_counter()
    try:
        return load_learner(path), None
    except BaseException as exc:  # noqa: B036 — the learner's file may raise anything, SystemExit included
        seconds = time.perf_counter() - start
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            outcome = escaped(exc, IMPORT, path, seconds)
        else:
            where = learner_line(exc, path)
            outcome = Outcome(IMPORT, "error", f"importing the file raised {type(exc).__name__}: {exc}{where}"[:300])
            outcome.seconds = seconds
        return None, outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kqv.exercise.child")
    parser.add_argument("name")
    parser.add_argument("file")
    parser.add_argument("results")
    parser.add_argument("--quick", action="store_true", help="skip the slow (end-to-end) checks")
    args = parser.parse_args(argv)
    module = exercise(args.name)
    path = str(Path(args.file).resolve())
    checks = [c for c in module.CHECKS if not (args.quick and c.slow)]
    sys.path.append(str(Path(path).parent))  # the learner's own helper modules, if any, import as they would
    with open(args.results, "a", encoding="utf-8") as results:

        def write(event: str, **fields) -> None:
            results.write(json.dumps({"event": event, **fields}, default=str) + "\n")
            results.flush()

        write("ready", checks=[{"name": c.name, "slow": c.slow} for c in checks])
        write("started", check=IMPORT)
        learner, failed = import_outcome(path)
        if failed is not None:
            write("outcome", **asdict(failed))
            write("done")
            return 0
        for check in checks:
            write("started", check=check.name)
            start = time.perf_counter()
            try:
                (outcome,) = run_checks([check], learner)
            except BaseException as exc:  # noqa: B036 — sys.exit() in a check is reported, not obeyed
                outcome = escaped(exc, check.name, path, time.perf_counter() - start)
            for stream in (sys.stdout, sys.stderr):  # the learner's prints, before the outcome that follows them
                try:
                    stream.flush()
                except Exception:  # a learner who closed or replaced the stream: nothing to flush
                    pass
            write("outcome", **asdict(outcome))
        write("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`kqv exercise …`: each step of the path as an exercise — a skeleton to fill in, and a checker that says why.

The exercises and their checks live in kqv.exercise (registry, runner); this module only parses and prints.
Exit codes: 0 everything checked passes; 1 a check fails or is not implemented yet (and `solution` before the
file passes); 2 unusable input (no such file, a syntax error, an unknown exercise, a file that would be
overwritten).
"""

import sys
from pathlib import Path

from kqv.commands._common import add_command, add_group, add_json_flag, emit_json, positive_float
from kqv.errors import UserError

LIST_TIMEOUT_S = 5.0  # per check, in `kqv exercise list`'s quick status

EXAMPLES = """\
  kqv exercise list                         # the exercises in path order, and how far your files are
  kqv exercise start backprop               # writes backprop.py here: fill in the functions it marks
  kqv exercise check backprop.py            # graded checks: what was expected, what came back, a hint
  kqv exercise solution backprop            # kqv's own code, once your file passes
"""


def register(groups) -> None:
    sub = add_group(
        groups,
        "exercise",
        "write it yourself: each step of the path as a skeleton to fill in, and a checker that explains what is wrong",
        EXAMPLES,
    )
    listing = add_command(
        sub,
        "list",
        "the exercises in path order, with the status of your file for each in this folder",
        "  kqv exercise list\n  kqv exercise list --dir my-exercises\n",
        run_list,
    )
    listing.add_argument("--dir", default=".", metavar="DIR", help="the folder of your files (default: this one)")
    add_json_flag(listing)

    start = add_command(
        sub,
        "start",
        "write an exercise's skeleton file into a folder (never over an existing file without --force)",
        "  kqv exercise start backprop\n  kqv exercise start softmax-cross-entropy --dir my-exercises\n",
        run_start,
    )
    start.add_argument("name", metavar="NAME", help="the exercise (see `kqv exercise list`)")
    start.add_argument("--dir", default=".", metavar="DIR", help="where to write it (default: this folder)")
    start.add_argument("--force", action="store_true", help="overwrite the file if it exists (your work is lost)")

    check = add_command(
        sub,
        "check",
        "run an exercise's checks on your file, simplest first; exit 0 when all pass",
        "  kqv exercise check backprop.py\n  kqv exercise check my_net.py --exercise backprop --quick --json\n",
        run_check,
    )
    check.add_argument("file", metavar="FILE", help="your file (its first line names the exercise)")
    check.add_argument("--exercise", metavar="NAME", help="the exercise, if the file's first line does not say")
    check.add_argument("--quick", action="store_true", help="skip the slow (end-to-end) checks")
    check.add_argument(
        "--timeout", type=positive_float, metavar="S",
        help="seconds each check may take (default 20, or $KQV_EXERCISE_TIMEOUT; end-to-end checks 6 times as long)",
    )  # fmt: skip
    add_json_flag(check)

    solution = add_command(
        sub,
        "solution",
        "kqv's own implementation and a reference answer, once your file passes every check",
        "  kqv exercise solution backprop\n  kqv exercise solution attention --show-anyway\n",
        run_solution,
    )
    solution.add_argument("name", metavar="NAME", help="the exercise")
    solution.add_argument("--dir", default=".", metavar="DIR", help="the folder of your file (default: this one)")
    solution.add_argument("--show-anyway", action="store_true", help="show it even before your file passes")


def run_list(args) -> None:
    from kqv.exercise.registry import ORDER, ExerciseMissing, exercise
    from kqv.exercise.runner import check_file

    folder = Path(args.dir)
    rows = []
    for name in ORDER:
        try:
            module = exercise(name)
        except ExerciseMissing:
            rows.append({"name": name, "step": "", "teaches": "(under construction)", "status": "", "file": None})
            continue
        path = folder / module.FILENAME
        row = {"name": name, "step": module.STEP, "teaches": module.TEACHES, "file": str(path)}
        if not path.is_file():
            row["status"], row["label"] = "not started", "not started"
        else:
            try:
                report = check_file(path, name, quick=True, timeout_s=LIST_TIMEOUT_S)
                passes = report.exit_code == 0
                row["status"] = "passes" if passes else "fails"
                row["label"] = "✓ passes" if passes else f"✗ fails ({report.passed} of {report.total})"
                row["passed"], row["total"] = report.passed, report.total
            except UserError as exc:  # a syntax error, say
                row["status"], row["label"], row["error"] = "fails", "✗ fails (does not run)", str(exc)
        rows.append(row)
    name_w = max(len(r["name"]) for r in rows)
    step_w = max(len(r["step"]) for r in rows)
    label_w = max(len(r.get("label", "")) for r in rows)
    print(f"the exercises, in path order (your files in {folder.resolve()}; quick checks only):")
    for r in rows:
        label = r.get("label", "")
        print(f"  {r['name'].ljust(name_w)}  {r['step'].ljust(step_w)}  {label.ljust(label_w)}  {r['teaches']}")
    print("start one: kqv exercise start NAME; check it: kqv exercise check FILE")
    if args.json:
        emit_json({"command": "exercise list", "dir": str(folder), "exercises": rows})


def run_start(args) -> None:
    from kqv.exercise.registry import exercise, todo_functions

    module = exercise(args.name)
    folder = Path(args.dir)
    path = folder / module.FILENAME
    if path.exists() and not args.force:
        raise UserError(
            f"{path} exists already: keep working on it, or pass --force to overwrite it (losing your work)"
        )
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    text = module.skeleton()
    path.write_text(text, encoding="utf-8")
    todo = [f"{n.split('.')[-1]}()" for n in todo_functions(text)]
    listed = ", ".join(todo[:-1]) + f" and {todo[-1]}" if len(todo) > 1 else "".join(todo)
    print(f"wrote {path}: {module.NAME} ({module.STEP}) — {module.TEACHES}")
    if listed:
        print(f"write {listed}: each raises NotImplementedError for now")
    print(f"check it as you go: kqv exercise check {path}")


def run_check(args) -> None:
    from kqv.exercise.runner import check_file

    report = check_file(args.file, args.exercise, quick=args.quick, timeout_s=args.timeout)
    for line in report.lines():
        print(line)
    if args.json:
        emit_json(report.to_dict())
    if report.exit_code:
        sys.stdout.flush()
        raise SystemExit(report.exit_code)


def run_solution(args) -> None:
    from kqv.exercise.registry import exercise, solution_sources
    from kqv.exercise.runner import check_file

    module = exercise(args.name)
    path = Path(args.dir) / module.FILENAME
    if not args.show_anyway:
        if not path.is_file():
            _not_yet(f"no {path} yet: start it with `kqv exercise start {module.NAME}`, or pass --show-anyway")
        report = check_file(path, module.NAME)
        if report.exit_code:
            _not_yet(
                f"{path} does not pass yet ({report.passed} of {report.total} checks pass): see "
                f"`kqv exercise check {path}`, or pass --show-anyway to see kqv's code now"
            )
    print(f"kqv's own implementation of {module.NAME}:")
    for entry in module.SOLUTION:
        print(f"  {entry}")
    for label, source in solution_sources(module):
        print()
        print(f"── {label} ──")
        print(source.rstrip())
    print()
    print(f"── a reference answer in the exercise's format ({module.FILENAME}) ──")
    print(module.reference().rstrip())


def _not_yet(message: str) -> None:
    """One line on stderr and exit code 1: not an error, just not yet."""
    print(f"kqv: {message}", file=sys.stderr)
    raise SystemExit(1)

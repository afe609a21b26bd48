"""Check a learner's file: its exercise's checks run in a child process with a time limit, reported as a TA would.

`check_file(path)` refuses what cannot be checked (no such file, a syntax error: UserError, naming the line), then
runs `python -m kqv.exercise.child` and watches the results it writes line by line (see kqv.exercise.child):

- time limits: the child gets STARTUP_S to import the exercise, then `timeout_s` (FAST_S = 20 s unless set by
  the caller or $KQV_EXERCISE_TIMEOUT) to import the learner's file and again for each check; a slow
  (end-to-end) check gets SLOW_FACTOR × that (120 s). A check past its limit is reported as "did not finish
  (an infinite loop?)", the process is killed and the checks after it are "not run";
- a process that ends early (os._exit, a signal, a crash) is reported with the check it was in and its exit code;
- whatever the learner prints is drained from a pipe and capped: only its first and last lines are kept.

The parent itself never runs the learner's code, so it always returns a Report.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import kqv
from kqv.errors import UserError
from kqv.exercise.framework import Outcome
from kqv.exercise.registry import canonical, exercise, exercise_of_file

FAST_S = 20.0  # importing the learner's file, and each check
SLOW_FACTOR = 6  # an end-to-end check: 6 × the fast limit (120 s by default)
STARTUP_S = 60.0  # the child's own start: Python, numpy, torch, the exercise module
TIMEOUT_ENV = "KQV_EXERCISE_TIMEOUT"
SHOWN_LINES = 5  # of the learner's output: the first (and, after a crash, the last) lines shown
LINE_CHARS = 200
SYMBOLS = {"pass": "✓", "fail": "✗", "error": "✗", "not implemented": "·", "not run": "-", "skipped": "-"}


@dataclass
class Report:
    """The outcome of every check of one file, in order, and what the learner's code printed."""

    name: str  # the exercise
    title: str  # "backprop (1. Digits): backpropagation …"
    file: str
    outcomes: list[Outcome]  # one per check that was to run; an "import" outcome first if the file did not import
    whats: dict[str, str] = field(default_factory=dict)  # check name -> what it checks
    skipped: list[str] = field(default_factory=list)  # slow checks left out (quick mode)
    output_lines: int = 0
    output_head: list[str] = field(default_factory=list)
    output_tail: list[str] = field(default_factory=list)
    crashed: bool = False  # the child ended early: show the last lines of output too
    quick: bool = False
    seconds: float = 0.0

    @property
    def checks(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.check != "import"]

    @property
    def passed(self) -> int:
        return sum(o.status == "pass" for o in self.checks)

    @property
    def total(self) -> int:
        return len(self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.total and self.passed == self.total else 1

    def next_step(self) -> str:
        first = next((o for o in self.outcomes if o.status != "pass"), None)
        if first is None:
            if self.quick and self.skipped:
                return "every quick check passes; run without --quick for the slow ones"
            return f"all done: see how kqv does it with `kqv exercise solution {self.name}`"
        if first.status == "not implemented":
            function = first.message.split(" ")[0]
            return f"next: write {function} (it still raises NotImplementedError), then check again"
        if first.status == "not run":
            return "next: run the checker again"
        return f"next: fix what `{first.check}` found, then run the checker again"

    def lines(self) -> list[str]:
        width = max([len(o.check) for o in self.outcomes] + [len(s) for s in self.skipped] + [4])
        out = [self.title, f"checking {self.file}"]
        said: dict[str, str] = {}  # failure message -> the first check that reported it
        for o in self.outcomes:
            symbol = SYMBOLS.get(o.status, "?")
            if o.status == "pass":
                out.append(f"  {symbol} {o.check.ljust(width)}  {self.whats.get(o.check, '')}".rstrip())
            elif o.status == "not implemented":
                out.append(f"  {symbol} {o.check.ljust(width)}  not implemented yet ({o.message.split(' ')[0]})")
            elif o.status == "not run":
                out.append(f"  {symbol} {o.check.ljust(width)}  not run")
            else:
                out.append(f"  {symbol} {o.check.ljust(width)}  {self.whats.get(o.check, '')}".rstrip())
                pad = " " * (width + 6)
                if said.get(o.message) and not (o.expected or o.got):  # the same exception, check after check
                    out.append(f"{pad}the same as `{said[o.message]}`")
                    continue
                said.setdefault(o.message, o.check)
                out.append(f"{pad}{o.message}")
                for label, text in (("expected", o.expected), ("got", o.got), ("hint", o.hint)):
                    if text:
                        out.append(f"{pad}{label + ':':<10}{text}")
        for name in self.skipped:
            out.append(f"  {SYMBOLS['skipped']} {name.ljust(width)}  skipped (slow: run without --quick)")
        if self.output_lines:
            shown = self.output_head[:SHOWN_LINES]
            plural = "s" if self.output_lines != 1 else ""
            more = f"; the first {len(shown)}" if self.output_lines > len(shown) else ""
            out.append(f"your code printed {self.output_lines:,} line{plural} while it was checked{more}:")
            out.extend(f"    | {line}" for line in shown)
            if self.crashed and self.output_lines > len(shown):
                tail = self.output_tail[-min(SHOWN_LINES, self.output_lines - len(shown)) :]
                out.append("  … and the last:")
                out.extend(f"    | {line}" for line in tail)
        out.append(self.next_step())
        out.append(f"{self.passed} of {self.total} checks pass")
        return out

    def to_dict(self) -> dict:
        return {
            "command": "exercise check",
            "exercise": self.name,
            "file": self.file,
            "passed": self.passed,
            "total": self.total,
            "exit_code": self.exit_code,
            "quick": self.quick,
            "skipped": self.skipped,
            "checks": [{**asdict(o), "what": self.whats.get(o.check, "")} for o in self.outcomes],
            "output_lines": self.output_lines,
            "seconds": self.seconds,
        }


class OutputTap:
    """Drains a child's merged stdout/stderr on a thread, keeping its first and last lines and a count."""

    def __init__(self, stream, keep: int = 2 * SHOWN_LINES) -> None:
        self.stream, self.keep = stream, keep
        self.head: list[str] = []
        self.tail: deque[str] = deque(maxlen=keep)
        self.lines = 0
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        partial = False  # the previous chunk was part of a line longer than the read size
        while chunk := self.stream.readline(8192):
            if not partial:
                self.lines += 1
                text = chunk.decode("utf-8", errors="replace").rstrip("\r\n")
                text = text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…"
                if len(self.head) < self.keep:
                    self.head.append(text)
                self.tail.append(text)
            partial = not chunk.endswith(b"\n")

    def join(self) -> None:
        self.thread.join(timeout=2.0)


def default_timeout() -> float:
    """$KQV_EXERCISE_TIMEOUT (seconds per check) when set, else FAST_S."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return FAST_S
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"${TIMEOUT_ENV} should be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise UserError(f"${TIMEOUT_ENV} should be more than 0 seconds, got {text!r}")
    return value


def compile_or_explain(path: Path) -> None:
    """UserError "FILE line N: SyntaxError: …" if the file is not valid Python."""
    try:
        compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        text = f" ({exc.text.strip()})" if exc.text and exc.text.strip() else ""
        raise UserError(f"{path} line {exc.lineno}: {type(exc).__name__}: {exc.msg}{text}") from None
    except ValueError as exc:  # e.g. a null byte
        raise UserError(f"{path}: not a Python file ({exc})") from None


def check_file(
    path: str | Path, name: str | None = None, quick: bool = False, timeout_s: float | None = None
) -> Report:
    """Run exercise `name`'s checks (default: the one the file names) on the learner's file -> Report.

    quick: skip the slow (end-to-end) checks. timeout_s: the limit for importing the file and for each check
    (default $KQV_EXERCISE_TIMEOUT or FAST_S); slow checks get SLOW_FACTOR times as long."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file (start one with `kqv exercise start NAME`)")
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    name = canonical(name) if name else exercise_of_file(path)
    module = exercise(name)
    compile_or_explain(path)
    limit = default_timeout() if timeout_s is None else float(timeout_s)
    checks = [c for c in module.CHECKS if not (quick and c.slow)]
    report = Report(
        name=name,
        title=f"{module.NAME} ({module.STEP}): {module.TEACHES}",
        file=str(path),
        outcomes=[],
        whats={"import": "the file imports", **{c.name: c.what for c in module.CHECKS}},
        skipped=[c.name for c in module.CHECKS if quick and c.slow],
        quick=quick,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kqv-exercise-") as folder:
        results = Path(folder) / "results.jsonl"
        results.touch()
        slow = {c.name: c.slow for c in checks}
        events, ended = _run_child(path.resolve(), name, results, quick, limit, slow, report)
    report.outcomes = _outcomes(events, ended, [c.name for c in checks], limit)
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class Ending:
    """How the child ended: "done", "timeout" (in `phase`, after `limit` s) or "exited" (with `code`)."""

    how: str
    phase: str = ""
    limit: float = 0.0
    code: int | None = None


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(kqv.__file__).resolve().parents[1])  # kqv importable even when it is not installed
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ beside the learner's file
    env["KQV_NO_PROGRESS"] = "1"
    return env


def _run_child(path: Path, name: str, results: Path, quick: bool, limit: float, slow: dict[str, bool], report: Report):
    command = [sys.executable, "-m", "kqv.exercise.child", name, str(path), str(results)] + (["--quick"] * quick)
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        cwd=path.parent, env=_child_env(), start_new_session=True,
    )  # fmt: skip
    tap = OutputTap(proc.stdout)
    events: list[dict] = []
    phase, deadline, phase_limit = "startup", time.monotonic() + STARTUP_S, STARTUP_S
    ending = None
    try:
        with results.open(encoding="utf-8") as f:
            pending = ""
            while ending is None:
                exited = proc.poll() is not None  # before reading, so nothing written before the exit is missed
                pending += f.read()
                *complete, pending = pending.split("\n")
                for line in complete:
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    events.append(event)
                    if event["event"] == "ready":
                        phase = "between checks"
                    elif event["event"] == "started":
                        phase = event["check"]
                        phase_limit = limit * (SLOW_FACTOR if slow.get(phase) else 1)
                        deadline = time.monotonic() + phase_limit
                    elif event["event"] == "done":
                        ending = Ending("done")
                if ending is not None:
                    break
                if exited:
                    ending = Ending("exited", phase, code=proc.returncode)
                elif time.monotonic() > deadline:
                    ending = Ending("timeout", phase, phase_limit)
                else:
                    time.sleep(0.02)
    finally:
        try:  # after "done" the child only has to exit; a thread the learner left running may keep it alive
            proc.wait(timeout=2.0 if ending is not None and ending.how == "done" else 0.0)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.wait()
        tap.join()
        proc.stdout.close()
    report.output_lines, report.output_head, report.output_tail = tap.lines, tap.head, list(tap.tail)
    report.crashed = ending is not None and ending.how != "done"
    return events, ending


def _kill(proc: subprocess.Popen) -> None:
    """The child and anything the learner's code started (its own session), at once."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (AttributeError, ProcessLookupError, PermissionError):
        proc.kill()


def _ended_early(ending: Ending) -> str:
    where = "while the file was being imported" if ending.phase == "import" else f"during check `{ending.phase}`"
    if ending.phase == "startup":
        return f"the checker's process could not start (exit code {ending.code}); its output is below"
    if ending.code is not None and ending.code < 0:
        try:
            signame = signal.Signals(-ending.code).name
        except ValueError:
            signame = f"signal {-ending.code}"
        memory = " (out of memory?)" if signame == "SIGKILL" else ""
        return f"the checker's process was killed by {signame}{memory} {where}"
    return f"the code ended the checker's process with exit code {ending.code} {where} (os._exit()?)"


def _outcomes(events: list[dict], ending: Ending | None, names: list[str], limit: float) -> list[Outcome]:
    """One Outcome per check to run (plus a failed import), from the child's events and how it ended."""
    fields = set(Outcome.__dataclass_fields__)
    done = {
        e["check"]: Outcome(**{k: v for k, v in e.items() if k in fields}) for e in events if e["event"] == "outcome"
    }
    for e in events:
        if e["event"] == "ready":
            names = [c["name"] for c in e["checks"]]
    outcomes = [done["import"]] if "import" in done else []
    if ending is not None and ending.how != "done" and ending.phase not in done:
        phase = ending.phase
        if ending.how == "timeout":
            if phase == "import":
                message = (
                    f"importing the file did not finish within {ending.limit:g} s: does it run something when it is "
                    'imported (training, input())? Put that under `if __name__ == "__main__":`'
                )
            elif phase in ("startup", "between checks"):
                message = f"the checker did not start within {ending.limit:g} s (is the machine very busy?)"
            else:
                message = f"check `{phase}` did not finish within {ending.limit:g} s (an infinite loop?)"
        else:
            message = _ended_early(ending)
        if phase in names:
            done[phase] = Outcome(phase, "error", message)
        else:
            outcomes = [Outcome("import", "error", message)]
    for name in names:
        outcomes.append(done.get(name) or Outcome(name, "not run"))
    return outcomes

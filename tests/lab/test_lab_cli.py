"""`kqv lab run` and `kqv lab report` end to end, on the tiny preset for a few steps."""

import contextlib
import csv
import io
import json
import re
import shutil

import pytest

from kqv.cli import main
from kqv.lab.results import TABLE_HEADER
from kqv.lab.run import run_dir_of
from kqv.lab.variants import BASELINE, Variant, parse_variant
from kqv.train.loop import read_log

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VARIANTS = ["score=negated_dot", "mask=anticausal;pos=rope"]  # no baseline: the lab adds it
BASE = Variant(**BASELINE)


def lab_run(out, *extra):
    args = ["lab", "run", "--preset", "tiny", "--steps", "10", "--seeds", "1", "--out", str(out)]
    for v in VARIANTS:
        args += ["--variants", v]
    return main(args + list(extra))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab") / "lab"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert lab_run(out, "--json") == 0
    (out.parent / "stdout.txt").write_text(printed.getvalue())
    return out


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The rows of the results table after its header: {variant cell: [cells]}."""
    lines = markdown[markdown.index(TABLE_HEADER) :].splitlines()[2:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    return {r[0]: r for r in rows}


def test_run_writes_every_output(lab, capsys):
    for name in ("lab.json", "results.csv", "results.md", "curves.png", "samples.md"):
        assert (lab / name).is_file(), name
    with (lab / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["spec"] for r in rows] == [BASE.spec] + [parse_variant(v).spec for v in VARIANTS]
    assert all(int(r["steps"]) == 10 for r in rows)
    md = (lab / "results.md").read_text()
    assert "negated_dot · causal · learned" in md and "**yes** (mask sees the future)" in md
    assert "```\nROMEO:" in (lab / "samples.md").read_text()
    meta = json.loads((lab / "lab.json").read_text())
    assert meta["steps"] == 10 and meta["seeds"] == 1 and meta["preset"] == "tiny"


def test_rerun_skips_finished_runs(lab, capsys):
    weights = run_dir_of(lab, parse_variant(VARIANTS[0]), 0) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert lab_run(lab) == 0
    out = capsys.readouterr().out
    assert out.count("finished before, skipped") == 3
    assert weights.stat().st_mtime_ns == before


def test_report_rebuilds_the_files(lab, capsys):
    table = (lab / "results.md").read_text()
    for name in ("results.csv", "results.md", "curves.png", "samples.md"):
        (lab / name).unlink()
    assert main(["lab", "report", str(lab)]) == 0
    assert (lab / "results.md").read_text() == table
    assert (lab / "curves.png").is_file() and (lab / "samples.md").is_file()
    assert "| variant | honest loss |" in capsys.readouterr().out


def test_an_interrupted_run_is_resumed_where_it_stopped(tmp_path, capsys):
    from kqv.train.gpt_run import train_gpt

    out = tmp_path / "lab"
    every5 = ("--set", "train.eval_interval=5")  # a state is saved at each evaluation
    assert lab_run(out, *every5) == 0  # both finish; now pretend the second was killed at step 5
    variant = parse_variant(VARIANTS[1])
    run_dir = run_dir_of(out, variant, 0)
    full = read_log(run_dir / "log.csv")
    shutil.rmtree(run_dir)
    sets = ["train.eval_interval=5", *variant.overrides, "train.seed=0"]  # as the lab sets them
    train_gpt(preset="tiny", out=str(run_dir), max_iters=10, overrides=sets, stop_at=5, say=lambda *_: None)
    assert read_log(run_dir / "log.csv")[-1]["step"] == 5
    capsys.readouterr()
    assert lab_run(out, *every5) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 2  # the baseline and VARIANTS[0]
    resumed = read_log(run_dir / "log.csv")
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    assert resumed[-1]["val_loss"] == pytest.approx(full[-1]["val_loss"], abs=1e-4)  # an exact resume


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["lab", "run", "--variants", "score=dotty"], "unknown score"),
        (["lab", "run", "--variants", "colour=red"], "keys score, mask, pos"),
        (["lab", "run", "--grid", "everything"], "invalid choice"),
        (["lab", "run", "--grid", "masks", "--variants", "mask=none"], "not allowed with"),
        (["lab", "run", "--set", "mask=none"], "the lab sets this itself"),
        (["lab", "report", "/nonexistent/lab"], "not a lab folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, words, capsys):
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's usage errors exit from inside parse_args
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


def test_other_settings_in_the_same_out_are_refused(lab, capsys):
    assert main(["lab", "run", "--preset", "tiny", "--steps", "11", "--seeds", "1", "--out", str(lab),
                 "--variants", VARIANTS[0]]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other steps" in err


def test_printed_lines_csv_and_markdown_agree_cell_by_cell(lab):
    printed = (lab.parent / "stdout.txt").read_text()
    line = re.compile(r"\] (.+), seed 0: honest loss (\S+), teacher-forced (\S+), honest − TF (\S+), \d+ s$", re.M)
    said = {m[1]: m.groups()[1:] for m in line.finditer(printed)}
    with (lab / "results.csv").open() as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    md = table_rows((lab / "results.md").read_text())
    shown = table_rows(printed)  # the table printed at the end is results.md's
    assert set(said) == set(rows) == {BASE.label} | {parse_variant(v).label for v in VARIANTS}
    for label, (honest, tf, gap) in said.items():
        cells = md[f"{label} **(baseline)**" if label == BASE.label else label]
        assert cells == shown[cells[0]]
        assert f"{float(rows[label]['honest_loss']):.3f}" == honest and cells[1] == f"{honest} ± –"
        assert f"{float(rows[label]['teacher_forced_loss']):.3f}" == tf and cells[2] == f"{tf} ± –"
        assert cells[3] == gap == f"{float(honest) - float(tf) + 0.0:+.3f}"  # the difference of the numbers shown


def test_variants_alone_still_get_the_baseline_row(lab):
    md = table_rows((lab / "results.md").read_text())
    assert md[f"{BASE.label} **(baseline)**"][5] == "(baseline)"
    others = [cells for name, cells in md.items() if "(baseline)" not in name]
    assert len(others) == len(VARIANTS) and all(re.match(r"[+-]\d\.\d{3}", cells[5]) for cells in others)
    meta = json.loads((lab / "lab.json").read_text())
    assert [v["spec"] for v in meta["variants"]][0] == BASE.spec

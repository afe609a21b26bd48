import math

from kqv.lab.results import RunResult, results_csv, results_table, summarize


def run(spec, seed, honest, best_val, tf=None, leaks=False):
    return RunResult(
        variant=spec.replace(";", " · "), spec=spec, seed=seed, steps=10, final_train_loss=2.0, final_val_loss=2.0,
        best_val_loss=best_val, teacher_forced_loss=honest if tf is None else tf, honest_loss=honest,
        mask_sees_future=leaks, tokens_per_second=1000.0, train_seconds=1.0, wall_seconds=2.0,
    )  # fmt: skip


RESULTS = [
    run("base", 0, 2.0, 2.0),
    run("base", 1, 2.2, 2.2),
    run("leaky", 0, 3.0, 0.5, tf=0.5, leaks=True),
    run("leaky", 1, 3.2, 0.7, tf=0.7, leaks=True),
    run("better", 0, 1.5, 1.5),
    run("better", 1, 1.52, 1.52),
]


def test_summaries_are_mean_and_sample_std_sorted_by_honest_loss():
    summaries = summarize(RESULTS)
    assert [s.spec for s in summaries] == ["better", "base", "leaky"]
    base = summaries[1]
    assert math.isclose(base.honest[0], 2.1) and math.isclose(base.honest[1], math.sqrt(0.02))  # n − 1
    assert summaries[2].leaks and not summaries[0].leaks
    assert math.isclose(summaries[2].gap, 2.5)


def test_table_rows_show_mean_plus_minus_std_leaks_and_noise():
    table = results_table(summarize(RESULTS), baseline_spec="base")
    lines = table.splitlines()
    assert lines[0].startswith("| variant | honest loss |") and len(lines) == 5
    assert lines[2].startswith("| better | 1.510 ± 0.014 | 1.510 ± 0.014 | +0.000 | no | -0.590 (beyond noise) |")
    assert lines[3].startswith("| base | 2.100 ± 0.141 | 2.100 ± 0.141 | +0.000 | no | – |")
    assert "| leaky | 3.100 ± 0.141 | 0.600 ± 0.141 | +2.500 | **yes** (mask sees the future) | +1.000" in lines[4]


def test_one_seed_has_no_std_and_a_measured_gap_is_flagged():
    table = results_table(summarize([run("copy", 0, 2.0, 1.0, tf=1.0)]))
    assert "| copy | 2.000 ± – | 1.000 ± – | +1.000 | **yes** (measured) |" in table


def test_csv_has_one_row_per_run_with_the_gap():
    lines = results_csv(RESULTS).splitlines()
    assert len(lines) == 1 + len(RESULTS)
    assert lines[0].split(",")[:3] == ["variant", "spec", "seed"] and lines[0].endswith(",gap")

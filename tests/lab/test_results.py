import math

from kqv.lab.results import RunResult, results_csv, results_table, summarize


def run(spec, seed, honest, best_val, tf=None, leaks=False):
    return RunResult(
        variant=spec.replace(";", " · "), spec=spec, seed=seed, steps=10, final_train_loss=2.0, final_val_loss=2.0,
        best_val_loss=best_val, teacher_forced_loss=honest if tf is None else tf, honest_loss=honest,
        mask_sees_future=leaks, tokens_per_second=1000.0, train_seconds=1.0, wall_seconds=2.0,
    )  # fmt: skip


RESULTS = [  # best_val (the trainer's batches) differs from tf everywhere: the table must show tf
    run("base", 0, 2.0, 2.3),
    run("base", 1, 2.2, 2.4),
    run("leaky", 0, 3.0, 0.9, tf=0.5, leaks=True),
    run("leaky", 1, 3.2, 0.8, tf=0.7, leaks=True),
    run("better", 0, 1.5, 1.7),
    run("better", 1, 1.52, 1.8),
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
    assert lines[0].startswith("| variant | honest loss | teacher-forced loss | honest − TF |") and len(lines) == 5
    assert lines[2].startswith("| better | 1.510 ± 0.014 | 1.510 ± 0.014 | +0.000 | no | -0.590 (beyond noise) |")
    assert lines[3].startswith("| base **(baseline)** | 2.100 ± 0.141 | 2.100 ± 0.141 | +0.000 | no | (baseline) |")
    assert "| leaky | 3.100 ± 0.141 | 0.600 ± 0.141 | +2.500 | **yes** (mask sees the future) | +1.000" in lines[4]


def test_one_seed_has_no_std_and_a_measured_gap_is_flagged():
    table = results_table(summarize([run("copy", 0, 2.0, 1.0, tf=1.0)]))
    assert "| copy | 2.000 ± – | 1.000 ± – | +1.000 | **yes** (measured) |" in table


def test_csv_has_one_row_per_run_with_the_gap():
    lines = results_csv(RESULTS).splitlines()
    assert len(lines) == 1 + len(RESULTS)
    assert lines[0].split(",")[:3] == ["variant", "spec", "seed"] and lines[0].endswith(",gap")


def test_the_gap_shown_is_the_difference_of_the_losses_shown():
    # 3.8674 − 0.4126 = 3.4548 would print +3.455 beside 3.867 and 0.413; the table shows +3.454
    table = results_table(summarize([run("copy", 0, 3.8674, 0.528, tf=0.4126, leaks=True)]))
    assert "| copy | 3.867 ± – | 0.413 ± – | +3.454 |" in table
    assert "0.528" not in table  # the trainer's best val loss is not the teacher-forced loss of these windows
    table = results_table(summarize([run("same", 0, 2.4114, 2.447, tf=2.4106)]))
    assert "| same | 2.411 ± – | 2.411 ± – | +0.000 |" in table and "-0.000" not in table


def test_without_the_baseline_in_the_results_delta_is_a_dash():
    table = results_table(summarize(RESULTS), baseline_spec="missing")
    assert "(baseline)" not in table and "| – |" in table

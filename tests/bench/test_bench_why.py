"""`kqv bench why` runs end to end on a small preset and reports each timing, ratio and goal.

(The timings themselves are not asserted: a benchmark measures them, tests check that what is timed is the
same work — the batched sweep and the loop give the same numbers.)"""

import pytest
import torch

from kqv.bench.why import resid_loop
from kqv.families import load_subject
from kqv.inspect.contrast import top_two
from kqv.inspect.patching import activation_patching
from tests.commands.running import cli, last_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_why_reports_every_timing_and_goal(capsys):
    code, out, err = cli(capsys, "bench", "why", "--preset", "tiny", "--tokens", "6", "--ig-steps", "4", "--repeats",
                         "1", "--json")  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    for key in ("resid_patching_s", "resid_loop_s", "integrated_gradients_s", "integrated_loop_s", "all_methods_s"):
        assert result[key] > 0
    assert result["command_s"] is not None and result["command_s"] > 0  # the command ran as a new process
    assert set(result["goals"]) == {"resid_patching_s", "integrated_gradients_s", "command_s"}
    assert "residual patching" in out and "integrated gradients" in out


def test_the_loop_reference_computes_what_the_batched_sweep_computes():
    subject = load_subject(preset="tiny")
    model, tok = subject.model, subject.tokenizer
    ids = tok.encode("hello there")
    corrupt = list(ids)
    corrupt[1] = (ids[1] + 1) % model.config.vocab_size
    with torch.no_grad():
        contrast = top_two(model(torch.tensor([ids])).logits[0, -1])
        clean = float(contrast.of(model(torch.tensor([ids])).logits)[0])
        corrupted = float(contrast.of(model(torch.tensor([corrupt])).logits)[0])
    sweep = activation_patching(model, ids, corrupt, contrast, by_position=False)
    looped = (resid_loop(model, ids, corrupt, contrast).double() - corrupted) / (clean - corrupted)  # (L, T)
    torch.testing.assert_close(sweep.resid.double(), looped, atol=1e-3, rtol=0)
    assert looped[0].abs().argmax() == 1  # at layer 0 only the changed token's stream matters

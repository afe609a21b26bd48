"""Activation patching and head ablation. Patching the whole clean stream before layer 0 must give the clean
logits and patching nothing the corrupted ones (metric 1 and 0, float64, ≤ 1e-12); every batched sweep
must equal a loop of single runs, each with a hook written here (≤ 1e-5, float32), whatever the chunk
size; zero and mean ablation must equal hand-written hooks on z (float64, ≤ 1e-10).
"""

import pytest
import torch

import kqv.inspect.patching as patching
from kqv.errors import UserError
from kqv.inspect.cache import hook_points, hooks, run_with_cache
from kqv.inspect.contrast import Contrast
from kqv.inspect.patching import Patch, ablate_heads, activation_patching, run_patched
from kqv.models.gpt import GPT
from tests.inspect import small
from tests.inspect.small import POSITIONAL

pytestmark = pytest.mark.usefixtures("one_torch_thread")

V, T, L, NH = 50, 7, 2, 2
CLEAN = [3, 17, 8, 25, 41, 9, 30]
CORRUPT = [3, 17, 44, 25, 41, 9, 30]  # position 2 differs
CONTRAST = Contrast(target=4, other=11)


def widened_gpt(seed: int = 0, std: float = 0.2, **kw) -> GPT:
    """As tests.inspect.small's, with this file's layers and heads and larger noise, so patches have visible effects."""
    return small.widened_gpt(seed, std, V, **{"n_layer": L, "n_head": NH, **kw})


def logits_of(model: GPT, ids: list[int], fns: dict | None = None) -> torch.Tensor:
    """(T, V) logits of one prompt, with hand-written hooks attached."""
    with hooks(model, fns or {}), torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
def test_the_whole_clean_stream_before_layer_0_restores_everything_and_no_patch_nothing(pos_encoding):
    model = widened_gpt(pos_encoding=pos_encoding, bias=True).double()
    corrupt = [20, 1, 2, 33, 4, 5, 6]  # almost every token differs
    clean_logits, cache = run_with_cache(model, torch.tensor([CLEAN]))
    rows = [Patch("blocks.0.resid_pre"), []]  # every position; nothing
    logits = run_patched(model, corrupt, rows, cache)  # (2, T, V)
    torch.testing.assert_close(logits[0], clean_logits.logits[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(logits[1], logits_of(model, corrupt), atol=1e-12, rtol=0)

    values = run_patched(model, corrupt, rows, cache, CONTRAST)  # (2,)
    clean, corrupted = float(CONTRAST.of(clean_logits.logits)[0]), float(CONTRAST.of(logits_of(model, corrupt)))
    restored = (values - corrupted) / (clean - corrupted)
    torch.testing.assert_close(restored, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-10, rtol=0)


def reference_sweeps(model: GPT, contrast: Contrast) -> dict[str, torch.Tensor]:
    """Every sweep of activation_patching, one forward pass per patch, each with its own hook written here."""
    _, cache = run_with_cache(model, torch.tensor([CLEAN]))
    clean = float(contrast.of(logits_of(model, CLEAN)))
    corrupted = float(contrast.of(logits_of(model, CORRUPT)))

    def restored(name: str, index) -> float:
        def swap(x, _name):
            x = x.clone()
            x[index] = cache[name][index]
            return x

        return (float(contrast.of(logits_of(model, CORRUPT, {name: swap}))) - corrupted) / (clean - corrupted)

    every = slice(None)
    sweeps = {
        "resid": [[restored(f"blocks.{i}.resid_pre", (every, p)) for p in range(T)] for i in range(L)],
        "heads": [[restored(f"blocks.{i}.attn.z", (every, h)) for h in range(NH)] for i in range(L)],
        "heads_by_position": [
            [[restored(f"blocks.{i}.attn.z", (every, h, p)) for p in range(T)] for h in range(NH)] for i in range(L)
        ],
        "mlp": [[restored(f"blocks.{i}.mlp.out", (every, p)) for p in range(T)] for i in range(L)],
    }
    return {"clean": clean, "corrupted": corrupted} | {k: torch.tensor(v) for k, v in sweeps.items()}


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
@pytest.mark.parametrize("position", [-1, 4])
def test_batched_sweeps_equal_a_loop_of_single_patched_runs(pos_encoding, position):
    model = widened_gpt(pos_encoding=pos_encoding, bias=pos_encoding != "none")
    change = logits_of(model, CLEAN)[position] - logits_of(model, CORRUPT)[position]  # (V,)
    contrast = Contrast(int(change.argmax()), int(change.argmin()), position)  # the corruption's biggest effect
    result = activation_patching(model, CLEAN, CORRUPT, contrast)
    reference = reference_sweeps(model, contrast)
    assert result.clean == pytest.approx(reference["clean"], abs=1e-5)
    assert result.corrupted == pytest.approx(reference["corrupted"], abs=1e-5)
    assert abs(result.clean - result.corrupted) > 0.1  # a corruption that matters: the metric is not noise
    for sweep in ("resid", "heads", "heads_by_position", "mlp"):
        torch.testing.assert_close(getattr(result, sweep), reference[sweep], atol=1e-5, rtol=0, msg=sweep)

    # the causal structure: position 2 alone differs, so patching it at layer 0 makes the prompts equal,
    # and positions before it, or after the contrast's position, change nothing
    p = position % T
    assert float(result.resid[0, 2]) == pytest.approx(1.0, abs=1e-5)
    assert result.resid[:, [0, 1]].abs().max() < 1e-5
    assert (result.resid[:, p + 1 :].abs() < 1e-5).all()  # (empty for the last position)
    assert result.mlp[-1, [q for q in range(T) if q != p]].abs().max() < 1e-5  # the last MLP acts in place


def test_chunking_does_not_change_the_result(monkeypatch):
    model = widened_gpt(pos_encoding="alibi").double()
    whole = activation_patching(model, CLEAN, CORRUPT, CONTRAST)
    monkeypatch.setattr(patching, "CHUNK_ELEMENTS", 1)  # one row per forward pass
    chunked = activation_patching(model, CLEAN, CORRUPT, CONTRAST, by_position=False)
    assert chunked.heads_by_position is None
    for sweep in ("resid", "heads", "mlp"):
        torch.testing.assert_close(getattr(chunked, sweep), getattr(whole, sweep), atol=1e-12, rtol=0)


@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
@pytest.mark.parametrize("how", ["zero", "mean"])
def test_head_ablation_equals_a_hand_written_hook_on_z(pos_encoding, how):
    model = widened_gpt(pos_encoding=pos_encoding, bias=True).double()
    contrast = Contrast(target=4, other=None, position=5)
    ablation = ablate_heads(model, CLEAN, contrast, how=how)
    _, cache = run_with_cache(model, torch.tensor([CLEAN]), names="blocks.*.attn.z")
    assert ablation.clean == pytest.approx(float(contrast.of(logits_of(model, CLEAN))), abs=1e-10)
    for i in range(L):
        for h in range(NH):

            def knock_out(z, _name, h=h, i=i):
                z = z.clone()  # (1, nh, T, hs)
                mean = cache[f"blocks.{i}.attn.z"][:, h].mean(dim=1, keepdim=True)  # (1, 1, hs): over positions
                z[:, h] = 0.0 if how == "zero" else mean
                return z

            expected = float(contrast.of(logits_of(model, CLEAN, {f"blocks.{i}.attn.z": knock_out})))
            assert float(ablation.values[i, h]) == pytest.approx(expected, abs=1e-10), (i, h)
    assert ablation.change.abs().min() > 1e-4  # every head matters a little in a random model
    torch.testing.assert_close(ablation.change, ablation.values - ablation.clean)


def test_prompts_of_different_lengths_are_refused():
    with pytest.raises(UserError, match=r"the clean prompt has 7 tokens and the corrupted one 6; .* same number"):
        activation_patching(widened_gpt(), CLEAN, CORRUPT[:6], CONTRAST)


def test_a_corruption_that_changes_nothing_is_refused():
    with pytest.raises(UserError, match=r"give the same logit difference .* pick another corruption"):
        activation_patching(widened_gpt(), CLEAN, list(CLEAN), CONTRAST)


@pytest.mark.parametrize(
    "patch, message",
    [
        (Patch("blocks.0.resid_pre", position=7), r"patch position 7 is out of range: the prompt has 7 tokens"),
        (Patch("blocks.1.attn.z", head=2), r"head 2 is out of range: the model has 2 heads per layer"),
        (Patch("blocks.0.resid_pre", head=0), r"blocks.0.resid_pre has no head axis"),
        (Patch("blocks.9.resid_pre"), r"no hook point is called 'blocks.9.resid_pre'"),
        (Patch("blocks.0.mlp.hidden"), r"a patch of 'blocks.0.mlp.hidden' has no source activation"),
    ],
)
def test_run_patched_refuses_bad_patches(patch, message):
    model = widened_gpt()
    _, cache = run_with_cache(model, torch.tensor([CLEAN]), names=["blocks.*.resid_pre", "blocks.*.attn.z"])
    with pytest.raises(UserError, match=message):
        run_patched(model, CORRUPT, [[patch]], cache)


def test_bad_how_and_contrast_are_refused():
    with pytest.raises(UserError, match=r"how='max': ablate heads with 'zero' or 'mean'"):
        ablate_heads(widened_gpt(), CLEAN, CONTRAST, how="max")
    with pytest.raises(UserError, match=r"the contrast's position 7 is out of range"):
        activation_patching(widened_gpt(), CLEAN, CORRUPT, Contrast(4, 11, position=7))


def test_mode_is_restored_and_no_hook_is_left_even_after_an_error():
    model = widened_gpt().train()
    activation_patching(model, CLEAN, CORRUPT, CONTRAST, by_position=False)
    assert model.training and not any(point.active for point in hook_points(model).values())
    wrong = {"blocks.0.resid_pre": torch.zeros(1, T, 5)}  # does not broadcast to (B, T, C)
    with pytest.raises(RuntimeError):
        run_patched(model, CORRUPT, [[Patch("blocks.0.resid_pre", 1)]], wrong)
    assert model.training and not any(point.active for point in hook_points(model).values())

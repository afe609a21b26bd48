"""Gradient accumulation with padding (PITFALL 18): micro-batches of different token counts.

Each micro-batch's loss is a mean over its own non-padding target tokens. k micro-steps must
give the gradient of the concatenated batch — the sum of token losses ÷ all tokens — not the
mean of the k means, which counts a micro-batch of 4 target tokens as much as one of 16. The
reference here is autograd on one forward pass over the concatenated, re-padded batch.
"""

from pathlib import Path

import pytest
import torch

from kqv.config import TrainConfig, TransformerConfig
from kqv.data.batching import TranslationBatch
from kqv.models.transformer import Transformer
from kqv.train.loop import Trainer
from tests.train.test_resume import ListBatches
from tests.train.writes import gradients_at_the_step

PAD, BOS, EOS = 0, 1, 2
CONFIG = TransformerConfig(
    vocab_size=23, max_len=16, n_layer_enc=1, n_layer_dec=1, n_head=2, n_embd=16, d_ff=32,
    dropout=0.0, label_smoothing=0.1,
)  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def batch_of(pairs: list[tuple[list[int], list[int]]]) -> TranslationBatch:
    """Pairs of (source ids, target ids) -> src + eos, bos + tgt, tgt + eos, each right-padded."""
    S = max(len(s) for s, _ in pairs) + 1
    T = max(len(t) for _, t in pairs) + 1
    src = torch.full((len(pairs), S), PAD)
    tgt_in, tgt_out = torch.full((len(pairs), T), PAD), torch.full((len(pairs), T), PAD)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s) + 1] = torch.tensor([*s, EOS])
        tgt_in[i, : len(t) + 1] = torch.tensor([BOS, *t])
        tgt_out[i, : len(t) + 1] = torch.tensor([*t, EOS])
    return TranslationBatch(src, tgt_in, tgt_out, PAD)


def random_pairs(g: torch.Generator, n: int, tgt_len: int) -> list[tuple[list[int], list[int]]]:
    ids = lambda k: torch.randint(3, CONFIG.vocab_size, (k,), generator=g).tolist()  # noqa: E731
    return [(ids(int(torch.randint(2, 9, (1,), generator=g))), ids(tgt_len)) for _ in range(n)]


def accumulated_gradients(run_dir: Path, micro: list[TranslationBatch]) -> tuple[dict, float]:
    """One optimiser step over `micro` as micro-batches -> (the gradients AdamW saw, the step's loss)."""
    torch.manual_seed(0)
    model = Transformer(CONFIG).double()
    cfg = TrainConfig(
        batch_size=1, grad_accum=len(micro), max_iters=1, lr=1e-3, warmup_iters=0, grad_clip=0.0,
        eval_interval=1, eval_iters=1,
    )  # fmt: skip
    first = tuple(micro[0][:3])
    trainer = Trainer(model, cfg, ListBatches(micro), {"train": [first], "val": [first]}, run_dir, say=lambda _: None)
    grads = gradients_at_the_step(trainer)
    result = trainer.fit()
    return grads, result.step_losses[0]


def concatenated(micro: list[TranslationBatch]) -> TranslationBatch:
    pairs = []
    for b in micro:
        for src, tgt in zip(b.src.tolist(), b.tgt_out.tolist(), strict=True):
            pairs.append(([i for i in src if i not in (PAD, EOS)], [i for i in tgt if i not in (PAD, EOS)]))
    return batch_of(pairs)


@pytest.mark.parametrize("lengths", [(1, 7), (7, 1), (1, 3, 7)], ids=["few-then-many", "many-then-few", "three"])
def test_k_micro_batches_of_different_token_counts_give_the_concatenated_batchs_gradient(tmp_path, lengths):
    g = torch.Generator().manual_seed(sum(lengths))
    micro = [batch_of(random_pairs(g, 2, n)) for n in lengths]  # 2·(n+1) target tokens each
    counts = [b.n_tokens for b in micro]
    assert len(set(counts)) == len(counts)  # the micro-batches really differ in size

    grads, step_loss = accumulated_gradients(tmp_path, micro)

    whole = concatenated(micro)  # the reference: one forward pass, one mean over every target token
    assert whole.n_tokens == sum(counts)
    torch.manual_seed(0)
    reference = Transformer(CONFIG).double().train()
    out = reference(whole.src, whole.tgt_in, whole.tgt_out)
    out.loss.backward()
    assert step_loss == pytest.approx(out.loss.item(), rel=1e-6)  # the trainer reports it in float32
    for name, p in reference.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-9, atol=1e-12, msg=name)

    # the mean of the micro-batches' means is a different gradient, by far: the test tells them apart
    torch.manual_seed(0)
    mean_of_means = Transformer(CONFIG).double().train()
    for b in micro:
        (mean_of_means(b.src, b.tgt_in, b.tgt_out).loss / len(micro)).backward()
    w = "decoder.0.ff.fc1.weight" if "decoder.0.ff.fc1.weight" in grads else next(iter(grads))
    difference = (mean_of_means.get_parameter(w).grad - grads[w]).norm() / grads[w].norm()
    assert difference > 0.05

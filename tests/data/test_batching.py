import json
import random
from collections import Counter

import pytest
import torch

from kqv.data.batching import TokenBudgetBatcher, TranslationBatch, fixed_batches
from kqv.errors import UserError

PAD, BOS, EOS = 0, 1, 2
IDS = dict(pad_id=PAD, bos_id=BOS, eos_id=EOS)


def make_examples(n: int, seed: int = 0, longest: int = 30) -> list[tuple[list[int], list[int]]]:
    """Example i starts both sides with the id 3 + i, so a batch row tells which example it holds."""
    rng = random.Random(seed)
    return [
        (
            [3 + i] + [rng.randrange(3, 50) for _ in range(rng.randint(0, longest))],
            [3 + i] + [rng.randrange(3, 50) for _ in range(rng.randint(0, longest))],
        )
        for i in range(n)
    ]


def example_ids(batch: TranslationBatch) -> list[int]:
    return (batch.src[:, 0] - 3).tolist()


def check_batch(batch: TranslationBatch, examples, max_tokens: int) -> None:
    """Every row holds its example exactly as the TranslationBatch docstring says, within the budget."""
    B, S = batch.src.shape
    T = batch.tgt_in.shape[1]
    assert batch.tgt_out.shape == (B, T) and batch.pad_id == PAD
    assert all(t.dtype == torch.int64 for t in batch[:3])
    assert B * max(S, T) <= max_tokens or B == 1
    longest_src = longest_tgt = 0
    for row, i in enumerate(example_ids(batch)):
        src, tgt = examples[i]
        assert batch.src[row].tolist() == src + [EOS] + [PAD] * (S - len(src) - 1)
        assert batch.tgt_in[row].tolist() == [BOS] + tgt + [PAD] * (T - len(tgt) - 1)
        assert batch.tgt_out[row].tolist() == tgt + [EOS] + [PAD] * (T - len(tgt) - 1)
        longest_src, longest_tgt = max(longest_src, len(src)), max(longest_tgt, len(tgt))
    assert (S, T) == (longest_src + 1, longest_tgt + 1)  # no column is all padding
    assert batch.n_tokens == sum(len(examples[i][1]) + 1 for i in example_ids(batch))


def test_one_batch_by_hand():
    [(indices, batch)] = fixed_batches([([5, 6, 7], [8, 9]), ([3, 4, 5, 6], [7])], max_tokens=100, **IDS)
    assert indices == [0, 1]
    assert batch.src.tolist() == [[5, 6, 7, 2, 0], [3, 4, 5, 6, 2]]
    assert batch.tgt_in.tolist() == [[1, 8, 9], [1, 7, 0]]
    assert batch.tgt_out.tolist() == [[8, 9, 2], [7, 2, 0]]
    assert batch.n_tokens == 5
    shifted = batch.tgt_out[:, :-1].masked_fill(batch.tgt_out[:, :-1] == EOS, PAD)
    assert torch.equal(batch.tgt_in[:, 1:], shifted)  # the decoder input is the target, one step late
    assert batch.to("cpu").src.tolist() == batch.src.tolist()


def test_every_example_once_per_epoch_within_the_budget():
    examples = make_examples(600)
    batcher = TokenBudgetBatcher(examples, max_tokens=200, seed=0, **IDS)
    for epoch in range(2):
        seen = Counter()
        for _ in range(batcher.batches_in_epoch):
            batch = batcher.next_batch()
            check_batch(batch, examples, 200)
            seen.update(example_ids(batch))
        assert batcher.epoch == epoch and seen == Counter(range(600))
    batcher.next_batch()
    assert batcher.epoch == 2


def test_epochs_differ_and_batches_group_similar_lengths():
    examples = make_examples(2000, longest=60)
    batcher = TokenBudgetBatcher(examples, max_tokens=500, seed=0, **IDS)
    assert batcher.pool_size < 2000  # several pools, each sorted by length on its own
    first = [example_ids(batcher.next_batch()) for _ in range(batcher.batches_in_epoch)]
    second = [example_ids(batcher.next_batch())]
    assert (batcher.epoch, batcher.position) == (1, 1)
    second += [example_ids(batcher.next_batch()) for _ in range(batcher.batches_in_epoch - 1)]
    assert first != second and sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(2000))
    # Sorting by length within pools keeps padding low: most source positions hold tokens.
    batches = [fixed for _, fixed in fixed_batches(examples, 500, **IDS)]
    real = sum(int((b.src != PAD).sum()) for b in batches)
    assert real / sum(b.src.numel() for b in batches) > 0.9


def test_a_pair_longer_than_the_budget_is_a_batch_of_its_own():
    examples = [([5] * 50, [6] * 3), ([7] * 2, [8] * 2), ([9] * 3, [10] * 70)]
    batcher = TokenBudgetBatcher(examples, max_tokens=20, seed=0, **IDS)
    shapes = sorted(tuple(batcher.next_batch().src.shape) for _ in range(batcher.batches_in_epoch))
    assert shapes == [(1, 3), (1, 4), (1, 51)]


def test_same_seed_same_order_other_seed_other_order():
    examples = make_examples(300)

    def order(seed):
        batcher = TokenBudgetBatcher(examples, max_tokens=150, seed=seed, **IDS)
        return [example_ids(batcher.next_batch()) for _ in range(40)]

    assert order(1) == order(1) and order(1) != order(2)


@pytest.mark.parametrize("drawn", [0, 7, 62, 100])  # fresh, mid-epoch, exactly one epoch (62 batches), past it
def test_a_restored_batcher_continues_exactly(drawn):
    examples = make_examples(300)
    original = TokenBudgetBatcher(examples, max_tokens=150, seed=5, **IDS)
    assert original.batches_in_epoch == 62
    for _ in range(drawn):
        original.next_batch()
    state = json.loads(json.dumps(original.state_dict()))
    restored = TokenBudgetBatcher(examples, max_tokens=150, seed=999, **IDS)
    restored.load_state_dict(state)
    for _ in range(45):
        a, b = original.next_batch(), restored.next_batch()
        assert all(torch.equal(x, y) for x, y in zip(a[:3], b[:3], strict=True))
    assert restored.epoch == original.epoch and restored.state_dict() == original.state_dict()


@pytest.mark.parametrize(
    ("examples", "max_tokens", "message"),
    [
        (make_examples(299), 150, "saved for 300 examples and max_tokens 150, but this run has 299 and 150"),
        (make_examples(300), 151, "but this run has 300 and 151"),
        (make_examples(300, seed=1), 150, "the training examples differ"),
    ],
)
def test_resuming_with_other_data_or_budget_is_refused(examples, max_tokens, message):
    state = TokenBudgetBatcher(make_examples(300), max_tokens=150, seed=0, **IDS).state_dict()
    with pytest.raises(UserError, match=f"cannot resume the batch order: .*{message}"):
        TokenBudgetBatcher(examples, max_tokens=max_tokens, seed=0, **IDS).load_state_dict(state)


def test_fixed_batches_cover_every_example_once_and_restore_the_order():
    examples = make_examples(500)
    batches = fixed_batches(examples, max_tokens=256, **IDS)
    assert batches == batches and [i for i, _ in batches] == [i for i, _ in fixed_batches(examples, 256, **IDS)]
    order = [i for indices, _ in batches for i in indices]
    assert sorted(order) == list(range(500))
    outputs = [None] * len(examples)
    for indices, batch in batches:
        check_batch(batch, examples, 256)
        assert indices == example_ids(batch)
        for i, row in zip(indices, batch.tgt_out.tolist(), strict=True):
            outputs[i] = row[: row.index(EOS)]  # what a decoder would produce, put back in place
    assert outputs == [tgt for _, tgt in examples]


@pytest.mark.parametrize(
    ("examples", "max_tokens", "message"), [([], 100, "no sentence pairs"), (make_examples(3), 0, "at least 1")]
)
def test_empty_data_or_budget_is_a_user_error(examples, max_tokens, message):
    with pytest.raises(UserError, match=message):
        TokenBudgetBatcher(examples, max_tokens=max_tokens, seed=0, **IDS)
    with pytest.raises(UserError, match=message):
        fixed_batches(examples, max_tokens, **IDS)

import numpy as np

from kqv.data.digits import load_embedded, stratified_split


def test_embedded_split_is_fixed_disjoint_and_stratified():
    a, b = load_embedded(), load_embedded()
    assert (len(a.train.labels), len(a.validation.labels), len(a.test.labels)) == (1258, 180, 359)
    assert np.array_equal(a.test.x, b.test.x)  # same split every time
    rows = {tuple(r) for part in (a.train, a.validation, a.test) for r in part.x}
    assert len(rows) >= 1790  # (the full set holds a few duplicate images)
    per_class = sum(np.bincount(p.labels, minlength=10) for p in (a.train, a.validation, a.test))
    for part, share in ((a.train, 0.7), (a.validation, 0.1), (a.test, 0.2)):
        counts = np.bincount(part.labels, minlength=10)
        assert np.all(np.abs(counts - share * per_class) <= 1)  # each class in the same proportion
    assert a.train.x.min() == 0.0 and a.train.x.max() == 1.0 and a.image_shape == (8, 8)


def test_stratified_split_partitions_indices():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    parts = stratified_split(labels, (0.5, 0.3, 0.2), seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(60))
    assert [np.bincount(labels[p]).tolist() for p in parts] == [[5, 10, 15], [3, 6, 9], [2, 4, 6]]

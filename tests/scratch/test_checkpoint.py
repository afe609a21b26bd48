import numpy as np
import pytest

from kqv.errors import UserError
from kqv.scratch import Network
from kqv.scratch.checkpoint import load_network, save_network


def test_round_trip_keeps_weights_and_config(tmp_path):
    net = Network([6, 5, 3], cost="quadratic", seed=2)
    path = save_network(tmp_path / "m.safetensors", net, {"history": [{"epoch": 1}]})
    loaded, config = load_network(path)
    assert config["sizes"] == [6, 5, 3] and config["cost"] == "quadratic" and config["history"] == [{"epoch": 1}]
    x = np.random.default_rng(0).normal(size=(4, 6))
    np.testing.assert_array_equal(loaded.feedforward(x), net.feedforward(x))
    assert b"pickle" not in path.read_bytes() and path.read_bytes()[8:9] == b"{"  # a safetensors header
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


@pytest.mark.parametrize("keep", [0, 7, 100, -20])
def test_truncated_or_garbage_file_is_a_clear_error(tmp_path, keep):
    path = save_network(tmp_path / "m.safetensors", Network([6, 5, 3]))
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(UserError, match="not a complete kqv digits model"):
        load_network(path)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="kqv digits train"):
        load_network(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_survives_the_round_trip(tmp_path, dtype):
    net = Network([6, 5, 3], seed=1, dtype=dtype)
    loaded, _ = load_network(save_network(tmp_path / "m.safetensors", net))
    assert loaded.dtype == dtype and all(w.dtype == dtype for w in loaded.weights)
    np.testing.assert_array_equal(loaded.weights[0], net.weights[0])

import numpy as np
import pytest

from kqv.scratch import Network


def test_shapes_of_every_activation_and_gradient():
    net = Network([64, 30, 20, 10], seed=0)
    fwd = net.forward(np.zeros((7, 64)))
    assert [a.shape for a in fwd.activations] == [(7, 64), (7, 30), (7, 20), (7, 10)]
    assert [z.shape for z in fwd.zs] == [(7, 30), (7, 20), (7, 10)]
    grads = net.backprop(np.zeros((7, 64)), np.eye(10)[[0] * 7])
    assert [g.shape for g in grads.weights] == [(30, 64), (20, 30), (10, 20)]
    assert [g.shape for g in grads.biases] == [(30,), (20,), (10,)]
    assert net.num_parameters == 64 * 30 + 30 + 30 * 20 + 20 + 20 * 10 + 10


def test_initialisation_is_gaussian_scaled_by_fan_in():
    net = Network([784, 400, 10], seed=0)
    assert np.std(net.weights[0]) == pytest.approx(1 / np.sqrt(784), rel=0.02)
    assert np.mean(net.weights[0]) == pytest.approx(0, abs=0.002)
    assert np.std(net.biases[0]) == pytest.approx(1.0, rel=0.15)


def test_same_seed_same_network_other_seed_other_network():
    a, b, c = Network([5, 4, 3], seed=1), Network([5, 4, 3], seed=1), Network([5, 4, 3], seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a.weights, b.weights, strict=True))
    assert not np.array_equal(a.weights[0], c.weights[0])


def test_softmax_output_rows_are_distributions():
    out = Network([5, 4, 3], seed=0).feedforward(np.random.default_rng(0).normal(size=(6, 5)) * 100)
    assert np.allclose(out.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("sizes", "cost", "message"),
    [
        ([10], "cross-entropy", "at least an input"),
        ([10, 0, 3], "cross-entropy", "at least one neuron"),
        ([10, 3], "hinge", "unknown cost"),
    ],
)
def test_invalid_networks_are_rejected(sizes, cost, message):
    with pytest.raises(ValueError, match=message):
        Network(sizes, cost=cost)


def test_load_parameters_checks_names_and_shapes():
    net = Network([5, 4, 3])
    params = {k: v.copy() for k, v in net.parameters().items()}
    with pytest.raises(ValueError, match="missing"):
        net.load_parameters({k: v for k, v in params.items() if k != "layers.0.bias"})
    params["layers.1.weight"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match="expected shape"):
        net.load_parameters(params)

"""Plots of the digits network: learning curves, and the test images it gets wrong."""

from pathlib import Path

import numpy as np

from kqv.viz.png import pyplot, save_png


def plot_history(history: list[dict], path: str | Path) -> Path:
    """Accuracy (train / validation / test) and cost (train / validation) per epoch."""
    plt = pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_acc, ax_cost) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in [("train_accuracy", "train"), ("validation_accuracy", "validation"), ("test_accuracy", "test")]:
        ax_acc.plot(epochs, [r[key] for r in history], marker=".", label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy per epoch")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    for key, label in [("train_cost", "train"), ("validation_cost", "validation")]:
        ax_cost.plot(epochs, [r[key] for r in history], marker=".", label=label)
    ax_cost.set(xlabel="epoch", ylabel="cost (with L2)", title="cost per epoch", yscale="log")
    ax_cost.grid(alpha=0.3)
    ax_cost.legend()
    return save_png(fig, path)


def plot_misclassified(net, test, image_shape: tuple[int, int], path: str | Path, limit: int = 40) -> Path:
    """A grid of up to `limit` misclassified test images, titled 'true → predicted'."""
    plt = pyplot()
    predicted = net.predict(test.x)
    wrong = np.flatnonzero(predicted != test.labels)
    shown = wrong[:limit]
    cols = 10
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.45 + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown, strict=False):
        ax.imshow(test.x[i].reshape(image_shape), cmap="gray_r", interpolation="nearest")
        ax.set_title(f"{test.labels[i]} → {predicted[i]}", fontsize=9, color="firebrick")
    fig.suptitle(
        f"{len(wrong)} of {len(test.labels)} test images misclassified (true → predicted)"
        + (f", first {len(shown)} shown" if len(wrong) > len(shown) else "")
    )
    return save_png(fig, path)

"""Loss curves of a training run, from its log rows."""

from pathlib import Path

from kqv.viz.png import pyplot, save_png


def plot_loss_curve(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Train and validation loss (nats per token) against the optimiser step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["train_loss"] for r in rows], marker=".", label="train")
    ax.plot(steps, [r["val_loss"] for r in rows], marker=".", label="validation")
    best = min(rows, key=lambda r: r["val_loss"])
    ax.annotate(f"best val {best['val_loss']:.3f}", (best["step"], best["val_loss"]), textcoords="offset points",
                xytext=(-60, 20), arrowprops={"arrowstyle": "->"})  # fmt: skip
    ax.set(xlabel="step", ylabel="loss (nats per token)", title=title or "loss", yscale="log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return save_png(fig, path)

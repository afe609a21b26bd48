"""Pictures of `kqv why`: what the causal and gradient methods say about one prediction.

Each function takes plain arrays and token labels (the methods' numbers live in kqv.inspect) and
writes one PNG:

    plot_lens            layer × position table, the top token written in each cell, coloured by
                         the probability of the target token
    plot_patching        how much patching one clean activation restores: the residual stream per
                         (layer, position), every head, every MLP per (layer, position)
    plot_contributions   direct logit attribution: one bar per part of the final residual stream
    plot_token_shading   the sentence with each token shaded by its score, one row per method
    plot_head_scores     the head detectors' scores, one layer × head map per detector
    plot_source_matrix   translation: output tokens × source tokens, one map per method

Signed quantities (attributions, logit differences, the patching metric) use a diverging map
centred on 0, so white means "nothing" in every picture.
"""

from pathlib import Path

import numpy as np
from matplotlib.patches import Rectangle

from kqv.inspect.attention import token_label
from kqv.viz.png import pyplot, save_png

DIVERGING = "RdBu_r"  # red: pushes towards the target, blue: against it


def _tick(text: str) -> str:
    return token_label(text).replace("$", r"\$")  # a "$" pair would start matplotlib's mathtext


def _symmetric_limit(*arrays: np.ndarray, floor: float = 1e-9) -> float:
    finite = [np.abs(a[np.isfinite(a)]).max() for a in arrays if a is not None and np.isfinite(a).any()]
    return max([floor, *finite])


def plot_lens(
    rows: list[str],
    tokens: list[str],
    top_texts: list[list[str]],
    values: np.ndarray,
    path: str | Path,
    value_label: str,
    title: str,
    query: int | None = None,
    dpi: int = 110,
) -> Path:
    """rows (R,) × tokens (T,): cell (r, t) shows top_texts[r][t] on a colour of values (R, T) in 0…1;
    the `query` column outlined."""
    plt = pyplot()
    R, T = values.shape
    fig, ax = plt.subplots(figsize=(float(np.clip(0.9 * T + 2.5, 6, 24)), float(np.clip(0.45 * R + 1.8, 3, 14))))
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    for r in range(R):
        for t in range(T):
            colour = "black" if values[r, t] > 0.6 else "white"
            ax.text(t, r, _tick(top_texts[r][t])[:8], ha="center", va="center", fontsize=7, color=colour)
    if query is not None:
        ax.add_patch(Rectangle((query - 0.5, -0.5), 1, R, fill=False, edgecolor="red", linewidth=1.5))
    ax.set_xticks(range(T), [_tick(t) for t in tokens], rotation=90, fontsize=8)
    ax.set_yticks(range(R), rows, fontsize=8)
    ax.set(xlabel="position (the token read; each cell predicts the next one)", ylabel="residual stream after")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label=value_label)
    return save_png(fig, path, dpi=dpi)


def plot_patching(
    resid: np.ndarray,
    heads: np.ndarray,
    mlp: np.ndarray | None,
    tokens: list[str],
    path: str | Path,
    title: str,
    resid_label: str = "residual stream entering layer",
    dpi: int = 110,
) -> Path:
    """resid (L, T) and mlp (L, T) per (layer, position), heads (Lh, nh); 1 = the clean answer restored."""
    plt = pyplot()
    L, T = resid.shape
    panels = [("residual stream", resid), ("attention heads (all positions)", heads)]
    if mlp is not None:
        panels.append(("MLP outputs", mlp))
    limit = max(1.0, _symmetric_limit(resid, heads, mlp))
    widths = [T, max(heads.shape[1], 2) + 1] + ([T] if mlp is not None else [])
    fig, axes = plt.subplots(
        1, len(panels), figsize=(float(np.clip(0.5 * sum(widths) + 3, 8, 28)), float(np.clip(0.5 * L + 2.2, 3, 12))),
        gridspec_kw={"width_ratios": widths}, squeeze=False,
    )  # fmt: skip
    image = None
    for ax, (name, matrix) in zip(axes[0], panels, strict=True):
        image = ax.imshow(matrix, cmap=DIVERGING, vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_yticks(range(matrix.shape[0]), [f"layer {i}" for i in range(matrix.shape[0])], fontsize=8)
        if matrix is heads:
            ax.set_xticks(range(heads.shape[1]), [f"head {h}" for h in range(heads.shape[1])], rotation=90, fontsize=8)
        else:
            ax.set_xticks(range(T), [_tick(t) for t in tokens], rotation=90, fontsize=8)
        for (r, c), v in np.ndenumerate(matrix):
            if abs(v) >= 0.3:
                ax.text(
                    c, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if abs(v) > 0.7 else "black"
                )
    axes[0, 0].set_ylabel(resid_label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.colorbar(
        image,
        ax=axes.ravel().tolist(),
        fraction=0.02,
        pad=0.02,
        label="restored: (patched − corrupted) / (clean − corrupted)",
    )
    return save_png(fig, path, dpi=dpi)


def plot_contributions(labels: list[str], values: np.ndarray, path: str | Path, title: str, dpi: int = 110) -> Path:
    """One bar per part (labels (P,), values (P,)), in the order of the forward pass."""
    plt = pyplot()
    P = len(labels)
    fig, ax = plt.subplots(figsize=(float(np.clip(0.28 * P + 2.5, 6, 26)), 4.2))
    colours = ["#b2182b" if v >= 0 else "#2166ac" for v in values]
    ax.bar(range(P), values, color=colours)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(P), labels, rotation=90, fontsize=7)
    ax.set_xlim(-0.6, P - 0.4)
    ax.set_ylabel("contribution to the logit difference")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path, dpi=dpi)


def plot_token_shading(
    tokens: list[str], rows: dict[str, np.ndarray], path: str | Path, title: str, dpi: int = 120
) -> Path:
    """The sentence once per method (rows: name -> (T,) scores), each token's box shaded by its score.

    Each row is scaled by its own largest |score|, so the methods' units need not agree; signed rows
    use the diverging map, rows with no negative entry a sequential one."""
    plt = pyplot()
    T = len(tokens)
    labels = [_tick(t) for t in tokens]
    widths = np.array([max(1.0, 0.55 + 0.12 * len(s)) for s in labels])
    starts = np.concatenate([[0.0], np.cumsum(widths)[:-1]])
    fig, ax = plt.subplots(figsize=(float(np.clip(0.45 * widths.sum() + 3.5, 7, 30)), 0.62 * len(rows) + 1.2))
    div, seq = plt.get_cmap(DIVERGING), plt.get_cmap("Reds")
    for r, (name, scores) in enumerate(rows.items()):
        y = len(rows) - 1 - r
        scores = np.asarray(scores, dtype=float)
        limit = _symmetric_limit(scores)
        signed = (scores < 0).any()
        for t in range(T):
            x = scores[t] / limit
            colour = div(0.5 + 0.5 * x) if signed else seq(0.85 * max(x, 0.0))
            ax.add_patch(plt.Rectangle((starts[t], y + 0.08), widths[t] - 0.08, 0.84, color=colour, linewidth=0))
            ax.text(starts[t] + widths[t] / 2, y + 0.5, labels[t], ha="center", va="center", fontsize=8,
                    color="white" if abs(x) > 0.65 else "black")  # fmt: skip
        ax.text(-0.3, y + 0.5, name, ha="right", va="center", fontsize=8)
    ax.set_xlim(-0.1, widths.sum())
    ax.set_ylim(0, len(rows))
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return save_png(fig, path, dpi=dpi)


def plot_head_scores(scores: dict[str, np.ndarray], path: str | Path, title: str, dpi: int = 110) -> Path:
    """One layer × head map per detector (name -> (L, nh) scores in 0…1), the score written in each cell."""
    plt = pyplot()
    L, nh = next(iter(scores.values())).shape
    fig, axes = plt.subplots(
        1, len(scores), figsize=(2.2 + (0.7 * nh + 0.9) * len(scores), 0.55 * L + 1.8), squeeze=False
    )
    image = None
    for ax, (name, matrix) in zip(axes[0], scores.items(), strict=True):
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        for (r, c), v in np.ndenumerate(matrix):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="black" if v > 0.6 else "white")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(nh), [str(h) for h in range(nh)], fontsize=8)
        ax.set_yticks(range(L), [str(i) for i in range(L)], fontsize=8)
        ax.set_xlabel("head", fontsize=8)
    axes[0, 0].set_ylabel("layer", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="score")
    return save_png(fig, path, dpi=dpi)


def plot_source_matrix(
    out_tokens: list[str], src_tokens: list[str], matrices: dict[str, np.ndarray], path: str | Path, title: str,
    dpi: int = 110,
) -> Path:  # fmt: skip
    """Translation: one (T, S) map per method (rows: the output token predicted, columns: source tokens)."""
    plt = pyplot()
    T, S = next(iter(matrices.values())).shape
    cell = float(np.clip(0.28 * max(T, S) + 1.5, 3, 9))
    fig, axes = plt.subplots(1, len(matrices), figsize=(cell * len(matrices) + 1, cell), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        if (matrix < 0).any():
            limit = _symmetric_limit(matrix)
            image = ax.imshow(matrix, cmap=DIVERGING, vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        else:
            image = ax.imshow(matrix, cmap="viridis", vmin=0.0, aspect="auto", interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(S), [_tick(t) for t in src_tokens], rotation=90, fontsize=7)
        ax.set_yticks(range(T), [_tick(t) for t in out_tokens], fontsize=7)
    axes[0, 0].set_ylabel("output token (predicted)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path, dpi=dpi)

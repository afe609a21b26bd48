"""Attention heatmaps: every layer and head at a glance, or one head large with its tokens.

Rows are queries, columns keys, colour the weight on a fixed 0–1 scale (so heads compare
fairly). Cells the mask forbids are grey: the future triangle of a causal (GPT, decoder) head.
Encoder self-attention and cross-attention forbid nothing, so nothing of theirs is grey
(kqv.inspect.attention.masked_pattern prepares every matrix drawn and checks that its rows sum to 1).
"""

from pathlib import Path

import numpy as np
from matplotlib.patches import Rectangle

from kqv.inspect.attention import masked_pattern, token_label
from kqv.inspect.patterns import AttentionMaps
from kqv.viz.png import pyplot, save_png

GRID_LABEL_LIMIT = 40  # token labels on the grid's axes up to this many tokens
HEAD_LABEL_LIMIT = 80  # … and on one head's large map
MASKED = "#d0d0d0"
TITLES = {
    "self": "masked self-attention",
    "encoder": "encoder self-attention",
    "decoder": "decoder masked self-attention",
    "cross": "cross-attention (decoder queries, source keys)",
}


def _cmap(plt):
    return plt.get_cmap("viridis").with_extremes(bad=MASKED)  # "bad": the masked cells of a np.ma array


def _tick_text(text: str) -> str:
    return token_label(text).replace("$", r"\$")  # a lone "$" pair would start matplotlib's mathtext


def _label_axes(ax, maps: AttentionMaps, fontsize: float, rows: bool = True, cols: bool = True) -> None:
    Tq, Tk = maps.patterns.shape[-2:]
    if rows:
        ax.set_yticks(range(Tq), [_tick_text(t) for t in maps.query_texts], fontsize=fontsize)
    if cols:
        ax.set_xticks(range(Tk), [_tick_text(t) for t in maps.key_texts], fontsize=fontsize, rotation=90)


def _caption(maps: AttentionMaps) -> str:
    hidden = "grey: masked (the future)" if maps.mask == "causal" else "grey: masked"
    shown = "" if maps.mask == "none" else f"; {hidden}, mask {maps.mask}"
    return f"rows: queries, columns: keys{shown}"


def plot_grid(maps: AttentionMaps, path: str | Path, title: str = "", dpi: int = 100) -> Path:
    """All layers (rows) × heads (columns) of one kind of attention in one figure."""
    plt = pyplot()
    L, nh, Tq, Tk = maps.patterns.shape
    allowed = maps.allowed()
    labelled = max(Tq, Tk) <= GRID_LABEL_LIMIT
    cell = 2.0 if not labelled else min(4.0, max(2.2, 0.085 * max(Tq, Tk)))
    fig, axes = plt.subplots(L, nh, figsize=(cell * nh + 1.2, cell * L + 0.8), squeeze=False)
    cmap = _cmap(plt)
    image = None
    for layer in range(L):
        for head in range(nh):
            ax = axes[layer, head]
            matrix = masked_pattern(maps.patterns[layer, head], allowed)
            image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if labelled:
                _label_axes(ax, maps, 6, rows=head == 0, cols=layer == L - 1)
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=9)
    fig.suptitle(f"{title or TITLES.get(maps.kind, maps.kind)}\n{_caption(maps)}", fontsize=10)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label="attention weight")
    return save_png(fig, path, dpi=dpi)


def plot_head(
    maps: AttentionMaps, layer: int, head: int, path: str | Path, query: int | None = None, dpi: int = 110
) -> Path:
    """One head large, with token labels (up to HEAD_LABEL_LIMIT tokens) and a colour bar; `query`'s row outlined."""
    plt = pyplot()
    Tq, Tk = maps.patterns.shape[-2:]
    matrix = masked_pattern(maps.patterns[layer, head], maps.allowed())
    width = float(np.clip(0.16 * Tk + 2.5, 5.0, 16.0))
    height = float(np.clip(0.16 * Tq + 1.5, 4.0, 16.0))
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(matrix, cmap=_cmap(plt), vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    if max(Tq, Tk) <= HEAD_LABEL_LIMIT:
        _label_axes(ax, maps, 8 if max(Tq, Tk) <= 40 else 6)
    if query is not None:
        ax.add_patch(Rectangle((-0.5, query - 0.5), Tk, 1, fill=False, edgecolor="red", linewidth=1.5))
    ax.set(xlabel="key (attended to)", ylabel="query (attending)")
    ax.set_title(f"{TITLES.get(maps.kind, maps.kind)}: layer {layer}, head {head}\n{_caption(maps)}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="attention weight")
    return save_png(fig, path, dpi=dpi)

"""Save a matplotlib figure as a PNG atomically and close it."""

import io
from pathlib import Path

from kqv.fileio import atomic_write_bytes


def save_png(fig, path: str | Path, dpi: int = 120) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def pyplot():
    """matplotlib.pyplot on the Agg backend: works with no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

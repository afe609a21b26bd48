"""Progress bars that appear only for a person watching a terminal.

They write to stderr, so stdout stays clean for `--json`, and switch themselves
off when stdout is not a terminal (a pipe, a file, CI) or KQV_NO_PROGRESS is set.
"""

import os
import sys

from tqdm import tqdm


def progress_enabled() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty() and not os.environ.get("KQV_NO_PROGRESS")


def progress_bar(total: int | None, desc: str, unit: str = "it") -> tqdm:
    """A bar to `update(n)` as work is done; `total=None` when the amount is unknown (a count, no bar)."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not progress_enabled(),
    )

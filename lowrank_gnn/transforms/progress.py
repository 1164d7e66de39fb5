"""A tqdm progress bar that stays quiet when stderr is not a terminal."""
from __future__ import annotations

import sys
from typing import Optional

from tqdm.auto import tqdm


class _Silent:
    """What :func:`progress_bar` returns when nothing is shown (cheaper than a disabled tqdm)."""

    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc) -> None:
        return None


def progress_bar(total: int, progress: Optional[bool] = None, desc: Optional[str] = None):
    """``tqdm`` over ``total`` graphs; ``progress=None`` shows it only when stderr is a terminal."""
    show = sys.stderr.isatty() if progress is None else bool(progress)
    if not show:
        return _Silent()
    return tqdm(total=total, desc=desc, unit="graph", leave=False)

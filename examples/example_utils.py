"""Command-line helpers shared by the examples: thread count and progress bars."""
from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Any, Dict, Iterable, Iterator, List, Optional, TypeVar

import torch

T = TypeVar("T")


def default_threads() -> int:
    """``$OMP_NUM_THREADS`` if set, else half the cores (at least 1, at most 8).

    Two threads on a 2-core machine that also runs other work are slower than one: each
    parallel region waits for the slower core.
    """
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="torch CPU threads ($OMP_NUM_THREADS if set, else half the cores)")


def set_threads(threads: int) -> None:
    if threads < 1:
        raise SystemExit(f"error: --threads must be >= 1 (got {threads})")
    torch.set_num_threads(threads)


def progress(iterable: Iterable[T], total: Optional[int] = None, desc: str = "", leave: bool = False) -> Iterator[T]:
    """A tqdm progress bar on stderr when it is a terminal (and tqdm is installed); else the iterable."""
    if not sys.stderr.isatty():
        yield from iterable
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from iterable
        return
    yield from tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True)


def log(message: str) -> None:
    """Print a line without breaking an active progress bar."""
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            tqdm.write(message)
            return
    print(message)


def write_csv(path: str, rows: List[Dict[str, Any]]) -> None:
    """Write result rows (dicts with the same keys) to a CSV file with a header line."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

"""Run a function on several local processes with the gloo backend, bounded in time.

For tests and benchmarks on one machine (training scripts use ``torchrun``). Processes are
forked where the platform allows it (no re-import of torch: ~0.1 s instead of seconds per
process) and spawned elsewhere.
"""
from __future__ import annotations

import datetime
import io
import multiprocessing
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RankResult:
    """Outcome of one rank: ``value`` (what the function returned) or ``error`` (a traceback),
    and ``seconds`` from process start to the end of the function."""

    rank: int
    value: Any = None
    error: Optional[str] = None
    seconds: float = float("nan")


def _worker(rank: int, world_size: int, port: int, collective_timeout: float, fn: Callable, args: Sequence,
            queue) -> None:
    import torch.distributed as dist

    start = time.perf_counter()
    torch.set_num_threads(1)  # ranks share the machine's cores
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=collective_timeout))
        value = fn(rank, world_size, *args)
        buffer = io.BytesIO()
        torch.save(value, buffer)  # by value: no shared-memory handles that die with the process
        queue.put((rank, buffer.getvalue(), None, time.perf_counter() - start))
    except BaseException:  # report everything, including a failure raised on purpose
        queue.put((rank, None, traceback.format_exc(), time.perf_counter() - start))
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # the group may be broken after a peer failed
                pass


def run_distributed(fn: Callable, world_size: int = 2, args: Sequence = (), timeout: float = 60.0,
                    collective_timeout: float = 20.0, raise_errors: bool = True) -> List[RankResult]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` gloo processes on localhost.

    Args:
        fn (callable): a module-level function (picklable where processes are spawned).
        world_size (int): number of processes. (default: ``2``)
        args (sequence): extra arguments. (default: ``()``)
        timeout (float): seconds after which all processes are killed and ``TimeoutError``
            is raised. (default: ``60.0``)
        collective_timeout (float): the process group's ``timeout``: how long a collective
            waits for a peer that does not arrive. (default: ``20.0``)
        raise_errors (bool): raise ``RuntimeError`` with every rank's traceback if any rank
            failed. (default: ``True``)

    Returns:
        one :class:`RankResult` per rank, in rank order.
    """
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context: Any = multiprocessing.get_context(method)  # the fork / spawn context (typed as BaseContext)
    queue = context.Queue()
    port = free_port()
    processes = [context.Process(target=_worker, args=(rank, world_size, port, collective_timeout, fn, args, queue),
                                 daemon=True) for rank in range(world_size)]
    for process in processes:
        process.start()
    results: Dict[int, RankResult] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < world_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"run_distributed: only ranks {sorted(results)} of {world_size} finished within "
                                   f"{timeout} s; the others were killed")
            try:
                rank, payload, error, seconds = queue.get(timeout=min(remaining, 1.0))
            except Exception:  # queue.Empty: check for processes that died without reporting
                dead = [r for r, p in enumerate(processes) if r not in results and p.exitcode not in (None, 0)]
                if dead:
                    for r in dead:
                        results[r] = RankResult(r, error=f"process exited with code {processes[r].exitcode}")
                continue
            value = torch.load(io.BytesIO(payload), weights_only=False) if payload is not None else None
            results[rank] = RankResult(rank, value, error, seconds)
    finally:
        for process in processes:
            process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
                process.join()
    ordered = [results[r] for r in range(world_size)]
    failed = [r for r in ordered if r.error is not None]
    if failed and raise_errors:
        report = "\n".join(f"--- rank {r.rank} ---\n{r.error}" for r in failed)
        raise RuntimeError(f"{len(failed)} of {world_size} rank(s) failed:\n{report}")
    return ordered


__all__ = ["run_distributed", "RankResult", "free_port"]

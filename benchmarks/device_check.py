"""One command for an accelerator check: the CUDA cases of the test suite and short versions of
every device-relevant benchmark, all written to one JSON results file.

Sections (each with its own time budget; cells past the budget are recorded as skipped):

  tests           ``pytest -k cuda`` over the test files that hold CUDA cases (they skip on a
                  machine without CUDA, so ``--device cpu`` only checks that they collect)
  batched_eigh    ``batched_eigh(method="dc")`` against ``torch.linalg.eigh`` on the same batch:
                  n = 4 ... 64 (including 32 and 33, the reported cliff of CUDA's eigh), batch 512
                  and 2048, float32 and float64; median times, ratio, the D&C's residual, and
                  which path ``method="auto"`` takes (the data to set its thresholds from)
  amortized       one training step (forward, backward, Adam) of the amortized backend against
                  the same step with ``torch.linalg.eigh``, on a dense symmetric matrix
  householder     FastH ``householder_product`` forward + backward against
                  ``torch.linalg.householder_product``

Usage::

    scripts/device_check.sh                       # CUDA, full (~8 min budget in all)
    scripts/device_check.sh --device cpu --quick  # the same code paths, well under a minute

Writes ``benchmarks/results/device_check_<device>[_quick].json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from lowrank_gnn.eigen import AmortizedBackend, batched_eigh
from lowrank_gnn.eigen.batched_dc import auto_method
from lowrank_gnn.linalg import householder_product

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FULL = {"sizes": [4, 8, 16, 24, 32, 33, 48, 64], "batches": [512, 2048], "amortized_n": [1024, 4096],
        "householder_d": [256, 1024], "repeats": 5}
QUICK = {"sizes": [4, 32, 33], "batches": [64], "amortized_n": [128], "householder_d": [64], "repeats": 1}
#: Seconds per section (full run): about 8 minutes in all, tests included.
BUDGET = {"tests": 150.0, "batched_eigh": 200.0, "amortized": 60.0, "householder": 40.0}


def timer(device: torch.device, fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` after one warm-up, synchronising the device around each call."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_tests(device: torch.device, budget: float) -> Dict:
    """The CUDA cases of the suite: every test file mentioning ``cuda``, selected with ``-k cuda``."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "cuda" in p.read_text())
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-k", "cuda", "-p", "no:cacheprovider", *files]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(command[1:]), "returncode": None, "summary": f"timed out after {budget:.0f} s"}
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    return {"command": " ".join(command[1:]), "files": files, "returncode": done.returncode,
            "summary": lines[-1] if lines else done.stderr.strip()[-500:],
            "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))]}


def check_batched_eigh(device: torch.device, config: Dict, budget: float) -> List[Dict]:
    rows, start = [], time.perf_counter()
    for dtype in (torch.float32, torch.float64):
        for n in config["sizes"]:
            for batch in config["batches"]:
                cell = {"dtype": str(dtype).replace("torch.", ""), "n": n, "batch": batch}
                if time.perf_counter() - start > budget:
                    rows.append({**cell, "skipped": "section budget"})
                    continue
                g = torch.Generator().manual_seed(n)
                a = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
                a = ((a + a.mT) / 2).to(device=device, dtype=dtype)
                lapack = timer(device, lambda: torch.linalg.eigh(a), config["repeats"])  # noqa: B023
                dc = timer(device, lambda: batched_eigh(a, method="dc"), config["repeats"])  # noqa: B023
                values, vectors = batched_eigh(a, method="dc")
                a64, l64, u64 = a.double(), values.double(), vectors.double()
                residual = float((torch.linalg.matrix_norm(a64 @ u64 - u64 * l64.unsqueeze(-2))
                                  / torch.linalg.matrix_norm(a64)).max())
                rows.append({**cell, "eigh_ms": 1e3 * lapack, "dc_ms": 1e3 * dc, "ratio_dc_over_eigh": dc / lapack,
                             "dc_residual": residual, "auto_picks": auto_method(a),
                             "faster": "dc" if dc < lapack else "lapack", "skipped": ""})
    return rows


def check_amortized(device: torch.device, config: Dict, budget: float) -> List[Dict]:
    """One training step on a dense symmetric ``A(theta)``: amortized backend (k = 16) vs ``eigh``."""
    rows, start = [], time.perf_counter()
    for n in config["amortized_n"]:
        if time.perf_counter() - start > budget:
            rows.append({"n": n, "skipped": "section budget"})
            continue
        rows.append(amortized_cell(device, n, config["repeats"]))
    return rows


def amortized_cell(device: torch.device, n: int, repeats: int) -> Dict:
    g = torch.Generator().manual_seed(n)
    base = torch.randn(n, n, generator=g) / n ** 0.5
    base = ((base + base.T) / 2).to(device)
    theta = torch.zeros(n, device=device, requires_grad=True)
    backend = AmortizedBackend(16, init="exact").to(device)
    backend(base)                                   # sizes and warm-starts the basis
    groups: List[Dict[str, Any]] = [{"params": [theta]}, {"params": list(backend.parameters()), "lr": 1e-3}]
    optimizer = torch.optim.Adam(groups, lr=1e-3)

    def step(kind: str) -> None:
        optimizer.zero_grad(set_to_none=True)
        a = base + torch.diag(theta)
        if kind == "eigh":
            loss = torch.linalg.eigh(a)[0][-16:].sum()
        else:
            pairs = backend(a)
            loss = pairs.eigenvalues.sum() + pairs.aux_loss
        loss.backward()
        optimizer.step()

    exact = timer(device, lambda: step("eigh"), repeats)
    amortized = timer(device, lambda: step("amortized"), repeats)
    diagnostics = backend.diagnostics
    return {"n": n, "k": 16, "eigh_step_ms": 1e3 * exact, "amortized_step_ms": 1e3 * amortized,
            "speedup": exact / amortized, "residual": None if diagnostics is None else float(diagnostics.residual),
            "skipped": ""}


def check_householder(device: torch.device, config: Dict, budget: float) -> List[Dict]:
    """FastH against ``torch.linalg.householder_product``: the d x d product applied to X (d x 32), fwd + bwd."""
    rows, start = [], time.perf_counter()
    for d in config["householder_d"]:
        if time.perf_counter() - start > budget:
            rows.append({"d": d, "skipped": "section budget"})
            continue
        g = torch.Generator().manual_seed(d)
        # unit lower-triangular vectors: LAPACK's convention (implicit unit diagonal, upper part ignored)
        # and FastH's (full vectors) then describe the same reflections
        vectors = (torch.randn(d, d, generator=g).tril(-1) + torch.eye(d)).to(device).requires_grad_()
        x = torch.randn(d, 32, generator=g).to(device)

        def fasth() -> None:
            householder_product(vectors, x).sum().backward()  # noqa: B023

        def reference() -> None:
            tau = 2 / (vectors * vectors).sum(0)  # noqa: B023
            (torch.linalg.householder_product(vectors, tau) @ x).sum().backward()  # noqa: B023

        with torch.no_grad():
            tau = 2 / (vectors * vectors).sum(0)
            error = float((householder_product(vectors, x) - torch.linalg.householder_product(vectors, tau) @ x)
                          .abs().max())
        fast, ref = timer(device, fasth, config["repeats"]), timer(device, reference, config["repeats"])
        rows.append({"d": d, "fasth_ms": 1e3 * fast, "linalg_householder_product_ms": 1e3 * ref,
                     "speedup": ref / fast, "max_abs_difference": error, "skipped": ""})
    return rows


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device to check (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="a few small cells per section (seconds)")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False; run on a CUDA machine or pass "
                     "--device cpu (which checks only that this script and its code paths run)")
    config = QUICK if args.quick else FULL
    scale = 0.1 if args.quick else 1.0
    started = time.perf_counter()
    results: Dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "cpu_count": os.cpu_count(), "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    results["tests"] = run_tests(device, BUDGET["tests"])
    print(f"tests: {results['tests']['summary']}", flush=True)
    sections: Dict[str, Callable[[torch.device, Dict, float], List[Dict]]] = {
        "batched_eigh": check_batched_eigh, "amortized": check_amortized, "householder": check_householder}
    for name, section in sections.items():
        t = time.perf_counter()
        results[name] = section(device, config, BUDGET[name] * scale)
        print(f"{name}: done in {time.perf_counter() - t:.1f} s", flush=True)
        for row in results[name] if isinstance(results[name], list) else [results[name]]:
            print("  ", json.dumps(row), flush=True)
    results["seconds"] = time.perf_counter() - started
    out = args.out or RESULTS / f"device_check_{device.type}{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()

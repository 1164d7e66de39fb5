"""The accelerator check (benchmarks/device_check.py) runs end to end here, on the CPU, so it cannot rot."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"


def test_device_check_runs_on_cpu_quick_and_writes_one_results_file(tmp_path):
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "results.json"
    module.main(["--device", "cpu", "--quick", "--out", str(out)])
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and results["quick"]
    assert results["tests"]["returncode"] == 0 and not results["tests"]["failures"]
    assert results["tests"]["files"], "no test file with CUDA cases was found"
    cells = results["batched_eigh"]
    assert {(c["dtype"], c["n"]) for c in cells} == {(d, n) for d in ("float32", "float64") for n in (4, 32, 33)}
    for cell in cells:
        assert not cell["skipped"] and cell["auto_picks"] == "lapack"      # CPU: LAPACK, as documented
        assert cell["dc_residual"] < 16 * cell["n"] * (1.2e-7 if cell["dtype"] == "float32" else 2.3e-16)
    (amortized,) = results["amortized"]
    assert amortized["residual"] is not None and amortized["residual"] < 1e-2 and amortized["amortized_step_ms"] > 0
    (householder,) = results["householder"]
    assert householder["max_abs_difference"] < 1e-4

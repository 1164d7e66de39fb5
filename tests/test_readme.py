"""The README's quick start runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs(planetoid_root, monkeypatch):
    monkeypatch.setenv("LOWRANK_GNN_DATA", str(planetoid_root))
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(block, str(README), "exec"), namespace)
    assert namespace["out"].shape == (2708, 7)
    assert namespace["pairs"].eigenvectors.shape == (2708, 16)
    assert all(p.grad is not None for p in namespace["model"].parameters())

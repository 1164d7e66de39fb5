"""The README: its quick start runs and says something meaningful, and the page stays short.

Every Python block of the README also runs in ``tests/test_docs_examples.py``; here the quick
start's output is checked.
"""
import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def quick_start() -> str:
    return re.search(r"## Quick start\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)


def test_quick_start_runs_and_prints_a_deflated_spectrum_and_an_accuracy(planetoid_root, monkeypatch):
    monkeypatch.setenv("LOWRANK_GNN_DATA", str(planetoid_root))
    namespace = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(quick_start(), str(README), "exec"), namespace)
    pairs, deflated = namespace["spectrum"]
    assert deflated.num_components == 78
    assert pairs.eigenvalues.shape == (64,) and (pairs.eigenvalues < 1 - 1e-4).all()  # not copies of 1.0
    assert float(namespace["correct"].float().mean()) > 0.7
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("78 components deflated") and lines[1].startswith("test accuracy")


def test_quick_start_matches_the_docs_quick_start():
    docs = (ROOT / "docs" / "get_started" / "quickstart.md").read_text()
    assert quick_start() in docs


def test_readme_is_short_and_self_contained():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert "../" not in text                      # no paths outside the repository
    assert not re.search(r"\bissue \d+|#\d+\b", text, re.I)
    for target in re.findall(r"\]\(([^)#]+)\)", text):  # relative links point at files that exist
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in README.read_text()
    assert re.search(r"^python -m pytest -q$", ci, re.M)
    assert "bash scripts/install.sh" in ci

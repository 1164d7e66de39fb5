"""The examples' command lines: every option documented with its default, a thread option."""
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "example_utils.py")


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_lists_every_option_with_its_default(name, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    monkeypatch.syspath_prepend(str(EXAMPLES))
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    assert stop.value.code == 0
    text = capsys.readouterr().out
    options = [line.split()[0] for line in text.splitlines() if line.strip().startswith("--")]
    assert options
    assert text.count("(default:") >= len(options) - 1  # every option but --help shows its default


@pytest.mark.parametrize("name", ["planetoid.py", "graph_classification.py", "ogbn_arxiv.py"])
def test_thread_option(name, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    monkeypatch.syspath_prepend(str(EXAMPLES))
    with pytest.raises(SystemExit):
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    assert "--threads" in capsys.readouterr().out


def test_default_threads_follow_omp_num_threads_else_half_the_cores(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import example_utils

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert example_utils.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(example_utils.os, "cpu_count", lambda: 2)
    assert example_utils.default_threads() == 1
    monkeypatch.setattr(example_utils.os, "cpu_count", lambda: 16)
    assert example_utils.default_threads() == 8


def test_progress_is_silent_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import example_utils

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert list(example_utils.progress(range(5), total=5, desc="x")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""

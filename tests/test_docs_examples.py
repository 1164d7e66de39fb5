"""Every example a user can copy runs as written.

* every ```` ```python ```` block of ``README.md`` and ``docs/**/*.md``, each in a fresh namespace;
* every ``>>>`` example in the docstrings of ``lowrank_gnn`` (doctest), one test per module.

Blocks that must not run (shell commands, ``torchrun``, output) are ```` ```bash ```` or
```` ```text ````. Each example gets a wall-clock limit (``EXAMPLE_TIMEOUT_S``): examples are
meant to take seconds.
"""
from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import lowrank_gnn

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_TIMEOUT_S = 60
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})python[ \t]*\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                   re.M | re.S)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)


def python_blocks() -> list[tuple[str, str]]:
    blocks, seen = [], set()
    for path in markdown_files():
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            body = "\n".join(row[len(match["indent"]):] for row in match["body"].splitlines())
            if body not in seen:  # the same example on two pages (README and docs) runs once
                seen.add(body)
                blocks.append((f"{path.relative_to(ROOT)}:{line}", body))
    return blocks


@contextmanager
def time_limit(seconds: int, what: str):
    """Raise after ``seconds`` of wall time (SIGALRM; a no-op where it is unavailable)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def stop(signum, frame):
        raise TimeoutError(f"{what} ran longer than {seconds} s: examples must take seconds")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def example_env(request, monkeypatch, tmp_path):
    """Data root with the seeded datasets, a scratch working directory, one torch thread, fixed seed."""
    root = request.getfixturevalue("planetoid_root")
    monkeypatch.setenv("LOWRANK_GNN_DATA", str(root))
    monkeypatch.chdir(tmp_path)
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
    torch.random.set_rng_state(state)


BLOCKS = python_blocks()


def test_docs_have_python_examples():
    assert len(BLOCKS) >= 10, [where for where, _ in BLOCKS]


@pytest.mark.parametrize("where, code", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_markdown_example_runs(where, code, example_env):
    namespace = {"__name__": "__docs_example__"}
    start = time.perf_counter()
    with time_limit(EXAMPLE_TIMEOUT_S, where):
        exec(compile(code, where, "exec"), namespace)
    assert time.perf_counter() - start < EXAMPLE_TIMEOUT_S


def public_modules() -> list[str]:
    names = ["lowrank_gnn"]
    for info in pkgutil.walk_packages(lowrank_gnn.__path__, "lowrank_gnn."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return names


MODULES = public_modules()


def run_docstring_examples(name: str) -> doctest.TestResults:
    """Run the ``>>>`` examples written in module ``name`` (not those of objects it imports from elsewhere),
    each in an empty namespace, as a user who copies it into a fresh interpreter would: an example
    imports every name it uses (the module's own imports are not visible to it)."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name, globs={}):
        if test.examples and (test.filename or "").startswith(os.path.dirname(module.__file__ or "")):
            with time_limit(EXAMPLE_TIMEOUT_S, test.name):
                runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_in_a_fresh_namespace(name, example_env):
    result = run_docstring_examples(name)
    assert result.failed == 0, (f"{result.failed} of {result.attempted} docstring examples in {name} failed in an "
                                "empty namespace (see stdout): an example imports every name it uses")


def test_every_example_section_has_runnable_lines():
    """A docstring's ``Example:`` section holds ``>>>`` lines, so the doctest test above runs it."""
    missing = []
    for name in MODULES:
        module = importlib.import_module(name)
        for test in doctest.DocTestFinder(exclude_empty=False).find(module, name):
            doc = test.docstring or ""
            for match in re.finditer(r"^\s*Examples?:\s*\n((?:\s*\n)*)(\s*)(\S.*)$", doc, re.M):
                if not match.group(3).startswith(">>>"):
                    missing.append(test.name)
    assert not missing, f"Example sections without >>> lines: {sorted(set(missing))}"

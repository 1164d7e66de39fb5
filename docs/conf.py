"""Sphinx configuration for the lowrank_gnn documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.

The API reference is generated at build time from the ``__all__`` of every package of
``lowrank_gnn`` (and of every module whose ``__all__`` holds names its package does not
export), so it follows the package structure without being edited by hand.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import lowrank_gnn  # noqa: E402

project = "lowrank_gnn"
author = "lowrank_gnn contributors"
copyright = "lowrank_gnn contributors (MIT License)"
release = lowrank_gnn.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"lowrank_gnn {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as a field list: NamedTuple fields are documented once, by :members:
napoleon_custom_sections = ["Shapes", "Conventions"]


# ---------------------------------------------------------------------------------------------
# API reference generated from __all__
# ---------------------------------------------------------------------------------------------
API_DIR = DOCS / "api" / "generated"


def _public_modules() -> list[str]:
    """``lowrank_gnn``, its packages, and modules exporting names their package does not."""
    names = ["lowrank_gnn"]
    for info in pkgutil.walk_packages(lowrank_gnn.__path__, "lowrank_gnn."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        if info.ispkg:
            names.append(info.name)
            continue
        module = importlib.import_module(info.name)
        parent = importlib.import_module(info.name.rsplit(".", 1)[0])
        exported = set(getattr(parent, "__all__", ()))
        own = [name for name in getattr(module, "__all__", ()) if name not in exported]
        if own:
            names.append(info.name)
    return names


def _directive(obj: object) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "autofunction"
    return "autodata"


def _write_api_pages() -> None:
    API_DIR.mkdir(parents=True, exist_ok=True)
    modules = _public_modules()
    # Each object is documented once, under the most specific module exporting it (so that
    # ``lowrank_gnn.LowRankGCNConv`` links to ``lowrank_gnn.nn.LowRankGCNConv``).
    home: dict[int, str] = {}
    for name in sorted(modules, key=lambda m: -m.count(".")):
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if not isinstance(obj, (str, int, float, tuple, dict, frozenset)):
                home.setdefault(id(obj), f"{name}.{attr}")
    written = set()
    for order, name in enumerate(sorted(modules, key=lambda m: (m != "lowrank_gnn", m))):
        module = importlib.import_module(name)
        exported = list(getattr(module, "__all__", ()))
        if not exported and name == "lowrank_gnn":
            continue  # the top-level package exports nothing yet
        if not exported:
            raise RuntimeError(f"{name} has no __all__: every public package must define one")
        title = f"``{name}``"
        lines = [title, "=" * len(title), "", f".. module:: {name}", "", f".. currentmodule:: {name}", ""]
        summary = (inspect.getdoc(module) or "").strip()
        if summary:
            lines += [summary, ""]
        documented_here, elsewhere = [], []
        for attr in exported:
            obj = getattr(module, attr)
            target = home.get(id(obj), f"{name}.{attr}")
            if target == f"{name}.{attr}" or isinstance(obj, (str, int, float, tuple, dict, frozenset)):
                documented_here.append(attr)
            else:
                elsewhere.append((attr, target))
        summarised = [attr for attr in documented_here if _directive(getattr(module, attr)) != "autodata"]
        constants = [attr for attr in documented_here if attr not in summarised]
        if summarised:
            lines += [".. autosummary::", "   :nosignatures:", ""] + [f"   {attr}" for attr in summarised] + [""]
        if constants:
            lines += ["Constants: " + ", ".join(f":py:data:`{attr}`" for attr in constants), ""]
        if elsewhere:
            lines += ["Re-exported here:", ""]
            lines += [f"- ``{name}.{attr}``: :py:obj:`{target}`" for attr, target in elsewhere] + [""]
        for attr in documented_here:
            obj = getattr(module, attr)
            directive = _directive(obj)
            if directive == "autodata":  # a constant: its value, not the docstring of its type
                value = repr(obj)
                lines += [f".. py:data:: {attr}", f"   :type: {type(obj).__name__}"]
                if len(value) <= 300 and "\n" not in value and " at 0x" not in value:
                    lines += [f"   :value: {value}"]
            else:
                lines += [f".. {directive}:: {attr}"]
            if directive == "autoclass":
                lines += ["   :members:"]
            lines += [""]
        path = API_DIR / f"{order:02d}_{name}.rst"
        text = "\n".join(lines)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.add(path.name)
    for stale in API_DIR.glob("*.rst"):
        if stale.name not in written:
            stale.unlink()


_write_api_pages()

"""The package's public surface: ``__all__`` everywhere, top-level exports, one-way imports."""
import ast
import importlib
from pathlib import Path

import pytest

import lowrank_gnn

ROOT = Path(lowrank_gnn.__file__).resolve().parent

#: Top-level private modules that every package may import on purpose.
SHARED_PRIVATE_MODULES = {"lowrank_gnn._validation"}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_names():
    return sorted(_module_name(path) for path in ROOT.rglob("__init__.py"))


def _imports(path: Path, root: Path = ROOT):
    """``(imported module, names)`` for every import in the file at ``path``, relative ones resolved."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [alias.name for alias in node.names]


def _top_package(module: str) -> str:
    """``lowrank_gnn.eigen.amortized`` -> ``lowrank_gnn.eigen``; top-level modules are their own package."""
    return ".".join(module.split(".")[:2])


def cross_package_private_imports(root: Path = ROOT):
    """``(file, imported module, name)`` for every private name one package imports from another."""
    found = []
    for path in sorted(root.rglob("*.py")):
        source = _top_package(_module_name(path, root))
        for target, names in _imports(path, root):
            if not target.startswith("lowrank_gnn") or _top_package(target) == source:
                continue
            if target in SHARED_PRIVATE_MODULES:
                continue
            private_module = any(part.startswith("_") for part in target.split(".")[1:])
            for name in names or [target]:
                if private_module or name.startswith("_"):
                    found.append((str(path.relative_to(root.parent)), target, name))
    return found


@pytest.mark.parametrize("package", _package_names())
def test_every_package_declares_all_and_its_names_exist(package):
    module = importlib.import_module(package)
    assert isinstance(getattr(module, "__all__", None), list), f"{package} has no __all__ list"
    assert len(set(module.__all__)) == len(module.__all__), f"{package}.__all__ repeats a name"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names {missing}, which {package} does not define"


def test_top_level_names_are_the_package_objects():
    packages = [importlib.import_module(name) for name in _package_names() if name != "lowrank_gnn"]
    assert "LowRankGCNConv" in lowrank_gnn.__all__ and "__version__" in lowrank_gnn.__all__
    for name in lowrank_gnn.__all__:
        if name == "__version__":
            continue
        owners = [package for package in packages if name in package.__all__]
        assert owners, f"lowrank_gnn.{name} is in no package's __all__"
        for package in owners:
            assert getattr(lowrank_gnn, name) is getattr(package, name), f"{name} differs from {package.__name__}'s"
    assert set(lowrank_gnn.__all__) <= set(dir(lowrank_gnn))


def test_top_level_import_is_lazy_and_unknown_names_raise():
    import subprocess
    import sys
    code = ("import sys, lowrank_gnn; assert 'torch' not in sys.modules, 'import lowrank_gnn imported torch'; "
            "from lowrank_gnn import EigenPairs; assert EigenPairs.__module__ == 'lowrank_gnn.eigen.base'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)
    with pytest.raises(AttributeError, match="no attribute 'NotAName'"):
        lowrank_gnn.NotAName  # noqa: B018


def test_no_package_imports_another_packages_private_names():
    assert cross_package_private_imports() == []


def test_linalg_imports_no_other_lowrank_gnn_package():
    upward = [(str(path), target) for path in sorted((ROOT / "linalg").rglob("*.py"))
              for target, _ in _imports(path)
              if target.startswith("lowrank_gnn") and _top_package(target) != "lowrank_gnn.linalg"
              and target not in SHARED_PRIVATE_MODULES]
    assert upward == []


#: Package -> the lowrank_gnn packages it may import (dependencies point one way).
LAYERS = {
    "linalg": set(),
    "operators": {"linalg"},
    "eigen": {"linalg", "operators"},
    "nn": {"linalg", "operators", "eigen"},
    "transforms": {"linalg", "operators", "eigen"},
    "distributed": {"linalg", "operators", "eigen", "nn", "transforms"},
    "testing": {"linalg", "operators", "eigen", "nn", "transforms", "distributed"},
}


def upward_imports(root: Path = ROOT):
    """``(file, imported package)`` for every import against the one-way order of :data:`LAYERS`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        source = _top_package(_module_name(path, root)).partition(".")[2]
        if source not in LAYERS:
            continue
        for target, _ in _imports(path, root):
            package = _top_package(target).partition(".")[2]
            if target.startswith("lowrank_gnn.") and package in LAYERS and package != source \
                    and package not in LAYERS[source]:
                found.append((str(path.relative_to(root.parent)), package))
    return found


def test_package_dependencies_point_one_way():
    assert set(LAYERS) == {name.split(".")[1] for name in _package_names() if name.count(".") == 1}
    assert upward_imports() == []


def test_the_private_import_check_catches_a_violation(tmp_path):
    """The checks above can fail: planted private and upward imports are reported."""
    fake = tmp_path / "lowrank_gnn"
    for package in ("eigen", "nn"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "nn" / "layer.py").write_text("from ..eigen.amortized import _rank_tolerance\n"
                                          "from ..eigen import _helpers\nfrom .._validation import check_k\n")
    assert cross_package_private_imports(fake) == [
        ("lowrank_gnn/nn/layer.py", "lowrank_gnn.eigen.amortized", "_rank_tolerance"),
        ("lowrank_gnn/nn/layer.py", "lowrank_gnn.eigen", "_helpers"),
    ]
    (fake / "eigen" / "backend.py").write_text("from ..nn.layer import Layer\nfrom ..operators import GraphOperator\n")
    assert upward_imports(fake) == [("lowrank_gnn/eigen/backend.py", "nn")]

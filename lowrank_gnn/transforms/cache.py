"""The on-disk cache of precomputed attributes: content-hashed keys, atomic writes, safe loads."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .packed import PackedGraphs

#: Bumped whenever the file layout or the meaning of a stored attribute changes, and whenever a
#: solver path changes so that the stored numbers would differ (another LAPACK driver for some sizes).
CACHE_FORMAT = 2


#: Each attribute's shape and dtype, as a transform computes it (its ``output_specs``).
OutputSpecs = Dict[str, Tuple[Tuple[int, ...], torch.dtype]]


def library_version() -> str:
    import lowrank_gnn

    return lowrank_gnn.__version__


def cache_key(packed: PackedGraphs, config: Dict[str, Any], device: torch.device) -> str:
    """A BLAKE2b digest of the graphs (node counts, edges, weights) and of everything else the result
    depends on: the transform's options, the default dtype, the device type, the versions of the
    library, of PyTorch and of SciPy (whose LAPACK the subset, band and ARPACK solvers call), and
    the cache format."""
    import scipy

    hasher = hashlib.blake2b(digest_size=20)
    meta = {"config": config, "dtype": str(torch.get_default_dtype()), "device": torch.device(device).type,
            "lowrank_gnn": library_version(), "torch": torch.__version__, "scipy": scipy.__version__,
            "format": CACHE_FORMAT}
    hasher.update(json.dumps(meta, sort_keys=True).encode())
    for tensor in (packed.num_nodes, packed.edge_ptr, packed.edge_index, packed.edge_weight):
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        hasher.update(str((array.dtype.str, array.shape)).encode())
        hasher.update(array.data.cast("B"))
    return hasher.hexdigest()


def cache_file(cache_dir: Path, config: Dict[str, Any], key: str) -> Path:
    return Path(cache_dir) / f"{str(config['transform']).lower()}_{key}.pt"


def load_cached(path: Path, key: str, specs: OutputSpecs,
                device: torch.device) -> Optional[Dict[str, Tensor]]:
    """The cached attributes, or ``None`` (missing file; or unreadable, foreign or inconsistent,
    with a warning). Loads with ``weights_only=True``: tensors and plain containers only.

    ``specs`` gives each attribute's shape and dtype, as the transform computes it
    (``output_specs``): a file whose entries differ in shape, dtype or layout (a sparse tensor),
    or hold NaN/Inf, is inconsistent.
    """
    if not path.exists():
        return None
    try:
        stored = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated, corrupt, unreadable or unsafe file
        warnings.warn(f"ignoring the unreadable cache file {path} ({type(error).__name__}: {error}); "
                      f"recomputing", stacklevel=3)
        return None
    problem = _inconsistency(stored, key, specs)
    if problem:
        warnings.warn(f"ignoring the cache file {path}: {problem}; recomputing", stacklevel=3)
        return None
    return {name: stored[name] for name in specs}


def _inconsistency(stored: Any, key: str, specs: OutputSpecs) -> Optional[str]:
    if not isinstance(stored, dict):
        return f"it holds a {type(stored).__name__}, not this library's cache layout"
    if stored.get("format") != CACHE_FORMAT or stored.get("lowrank_gnn") != library_version():
        return (f"it was written by lowrank_gnn {stored.get('lowrank_gnn')!r} (cache format "
                f"{stored.get('format')!r}); this is {library_version()!r} (format {CACHE_FORMAT})")
    if stored.get("key") != key:
        return "its content key does not match these graphs and options"
    for name, (shape, dtype) in specs.items():
        value = stored.get(name)
        if not isinstance(value, Tensor):
            return f"its {name!r} entry is missing"
        if value.layout != torch.strided:
            return f"its {name!r} entry is a {value.layout} tensor, not a dense one"
        if tuple(value.shape) != shape or value.dtype != dtype:
            return (f"its {name!r} entry has shape {tuple(value.shape)} and dtype {value.dtype}, not {shape} "
                    f"and {dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"its {name!r} entry holds NaN or Inf"
    return None


def save_cached(path: Path, key: str, outputs: Dict[str, Tensor]) -> None:
    """Write atomically (a temporary file of a random name in the same folder, created with the
    umask's default mode as any file, then ``os.replace``), so that a reader never sees a partial
    file and two writers of the same key simply both succeed. A folder that cannot be written, or
    a write that fails part-way (a full disk, a file size limit: ``torch.save`` raises a
    ``RuntimeError`` then), gives a warning, not an error: the temporary file is removed and the
    results are still returned."""
    payload: Dict[str, Any] = {"format": CACHE_FORMAT, "lowrank_gnn": library_version(), "key": key}
    payload.update({name: value.detach().cpu() for name, value in outputs.items()})
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        name = str(path.parent / f"{path.name}.{secrets.token_hex(8)}.tmp")
        # mode 0o666 less the umask, as PyG's processed files get (mkstemp's 0o600 would hide them from a group)
        handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        temporary = name  # ours from here on: removed if the write fails
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        os.replace(temporary, path)
        temporary = None
    except (OSError, RuntimeError) as error:
        warnings.warn(f"could not write the cache file {path} ({type(error).__name__}: {error}); the results "
                      f"are computed but not cached", stacklevel=3)
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)

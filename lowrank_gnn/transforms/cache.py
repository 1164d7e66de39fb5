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
CACHE_FORMAT = 3

#: Environment variables, read once at start-up, that choose the code path or the thread count of
#: the BLAS and LAPACK libraries (MKL's instruction set and reproducibility mode; the code path and
#: threads of NumPy's and SciPy's OpenBLAS, which falls back to ``OMP_NUM_THREADS``). They change
#: the order of floating-point sums, hence possibly the results, so their values are in the key.
BLAS_ENVIRONMENT = ("MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS",
                    "OMP_NUM_THREADS")


#: Each attribute's shape and dtype, as a transform computes it (its ``output_specs``).
OutputSpecs = Dict[str, Tuple[Tuple[int, ...], torch.dtype]]


def library_version() -> str:
    import lowrank_gnn

    return lowrank_gnn.__version__


def cache_key(packed: PackedGraphs, config: Dict[str, Any], device: torch.device) -> str:
    """A BLAKE2b digest of the graphs (node counts, edges, weights) and of everything else the result
    depends on: the transform's options, the default dtype, the device type, the versions of the
    library, of PyTorch, of NumPy and of SciPy (whose LAPACK the subset, band and ARPACK solvers
    call), PyTorch's thread count and CPU code path (``torch.backends.cpu.get_cpu_capability()``),
    the variables of :data:`BLAS_ENVIRONMENT`, and the cache format. Thread counts and
    instruction sets change the order of floating-point sums, which within a repeated eigenvalue
    or at a sign pivot changes the result by O(1), not only in the last bits."""
    import scipy

    hasher = hashlib.blake2b(digest_size=20)
    meta = {"config": config, "dtype": str(torch.get_default_dtype()), "device": torch.device(device).type,
            "lowrank_gnn": library_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "environment": {name: os.environ.get(name) for name in BLAS_ENVIRONMENT}, "format": CACHE_FORMAT}
    hasher.update(json.dumps(meta, sort_keys=True).encode())
    for tensor in (packed.num_nodes, packed.edge_ptr, packed.edge_index, packed.edge_weight):
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        hasher.update(str((array.dtype.str, array.shape)).encode())
        if array.size:  # an empty array has no bytes (and its buffer cannot be cast)
            hasher.update(array.data.cast("B"))
    return hasher.hexdigest()


def cache_file(cache_dir: Path, config: Dict[str, Any], key: str) -> Path:
    return Path(cache_dir) / f"{str(config['transform']).lower()}_{key}.pt"


def load_cached(path: Path, key: str, specs: OutputSpecs,
                device: torch.device) -> Optional[Dict[str, Tensor]]:
    """The cached attributes on ``device``, or ``None`` (missing file; or unreadable, foreign,
    inconsistent or corrupted, with a warning). Loads with ``weights_only=True`` (tensors and
    plain containers only) onto the CPU, where the checks run.

    ``specs`` gives each attribute's shape and dtype, as the transform computes it
    (``output_specs``): a file whose entries differ in shape, dtype or layout (a sparse tensor, a
    view, an expanded or non-contiguous tensor), require grad, hold NaN/Inf, or whose bytes do not
    match the SHA-256 digests stored beside them (:func:`tensor_digest`), is inconsistent.
    """
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, NotADirectoryError):  # no file there (a path component may be a file)
        return None
    except Exception as error:  # truncated, corrupt, unreadable (no permission) or unsafe file
        warnings.warn(f"ignoring the unreadable cache file {path} ({type(error).__name__}: {error}); "
                      f"recomputing", stacklevel=3)
        return None
    problem = _inconsistency(stored, key, specs)
    if problem:
        warnings.warn(f"ignoring the cache file {path}: {problem}; recomputing", stacklevel=3)
        return None
    return {name: stored[name].to(device) for name in specs}


def tensor_digest(value: Tensor) -> str:
    """The SHA-256 digest of a contiguous CPU tensor's dtype, shape and bytes. ``torch.load`` does
    not check the zip archive's CRCs, so a file corrupted in place (same length) loads; this digest
    catches it. SHA-256 is as fast as any hashlib digest here (1.15 GB/s on 100 MB, one thread;
    SHA-1 1.16, BLAKE2b 0.96, MD5 0.69; zlib's CRC-32, not a hashlib digest, 2.2 GB/s)."""
    hasher = hashlib.sha256(f"{value.dtype} {tuple(value.shape)}".encode())
    if value.numel():
        hasher.update(value.numpy().data)
    return hasher.hexdigest()


def _inconsistency(stored: Any, key: str, specs: OutputSpecs) -> Optional[str]:
    if not isinstance(stored, dict):
        return f"it holds a {type(stored).__name__}, not this library's cache layout"
    version, file_format = stored.get("lowrank_gnn"), stored.get("format")
    if type(file_format) is not int or type(version) is not str:
        return "its format and version entries are not this library's cache layout"
    if file_format != CACHE_FORMAT or version != library_version():
        return (f"it was written by lowrank_gnn {version!r} (cache format {file_format!r}); this is "
                f"{library_version()!r} (format {CACHE_FORMAT})")
    if type(stored.get("key")) is not str or stored["key"] != key:
        return "its content key does not match these graphs and options"
    digests = stored.get("digests")
    if not isinstance(digests, dict):
        return "it has no digests of its entries"
    for name, (shape, dtype) in specs.items():
        problem = _entry_inconsistency(name, stored.get(name), shape, dtype)
        if problem:
            return problem
        if digests.get(name) != tensor_digest(stored[name]):
            return f"its {name!r} entry does not match its digest (the file was corrupted)"
    return None


def _entry_inconsistency(name: str, value: Any, shape: Tuple[int, ...], dtype: torch.dtype) -> Optional[str]:
    """What makes a loaded entry unusable as the attribute ``name``: each test in an order in which
    no earlier one can fail by raising (no ``item()`` on a meta tensor, no bytes of a sparse one)."""
    if not isinstance(value, Tensor):
        return f"its {name!r} entry is missing"
    if value.layout != torch.strided or value.device.type != "cpu":
        return f"its {name!r} entry is a {value.layout} tensor on {value.device}, not a dense one on the CPU"
    if tuple(value.shape) != shape or value.dtype != dtype:
        return (f"its {name!r} entry has shape {tuple(value.shape)} and dtype {value.dtype}, not {shape} "
                f"and {dtype}")
    if value.requires_grad:
        return f"its {name!r} entry requires grad"
    if value.is_neg() or value.is_conj():
        return f"its {name!r} entry carries a lazy negation or conjugation"
    if not _owns_its_storage(value):
        return f"its {name!r} entry is a view (non-contiguous, expanded or part of a larger storage)"
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        return f"its {name!r} entry holds NaN or Inf"
    return None


def _owns_its_storage(value: Tensor) -> bool:
    """Contiguous and exactly its storage (no view of a larger one): what ``torch.save`` writes is then
    the tensor's own bytes, and what a loaded entry must be."""
    return (value.is_contiguous() and value.storage_offset() == 0
            and value.untyped_storage().nbytes() == value.numel() * value.element_size())


def save_cached(path: Path, key: str, outputs: Dict[str, Tensor]) -> None:
    """Write atomically (a temporary file of a random name in the same folder, created with the
    umask's default mode as any file, then ``os.replace``), so that a reader never sees a partial
    file and two writers of the same key simply both succeed. Each tensor is stored contiguous
    and as its own storage (a view is copied first), with its :func:`tensor_digest`. A folder
    that cannot be written, or a write that fails part-way (a full disk, a file size limit:
    ``torch.save`` raises a ``RuntimeError`` then), gives a warning, not an error: the temporary
    file is removed and the results are still returned."""
    tensors = {name: value if _owns_its_storage(value) else value.clone(memory_format=torch.contiguous_format)
               for name, value in ((name, value.detach().cpu()) for name, value in outputs.items())}
    payload: Dict[str, Any] = {"format": CACHE_FORMAT, "lowrank_gnn": library_version(), "key": key,
                               "digests": {name: tensor_digest(value) for name, value in tensors.items()}}
    payload.update(tensors)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        name = str(path.parent / f"{path.name}.{secrets.token_hex(8)}.tmp")
        # mode 0o666 less the umask, the mode PyG's processed files get, so a group that reads them reads this one
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

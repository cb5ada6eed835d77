"""Index caches: `.npy` files named by a hash of everything that determines them.

Like megatron-core, indices are built once and reused by later runs (and by every rank):
the name carries an MD5 of a JSON description (kind, prefix, the sequence lengths' digest,
split bounds, sample count, seq-length, seed), so changed parameters or rewritten data never
hit a stale cache. Each array is written under a temporary name and renamed; the
description file is renamed last and marks the set complete, so ranks building the same
cache at once, or a crash mid-write, never leave a torn set that is read back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from atelier.core.atomic import atomic_file
from atelier.core.errors import AtelierError


def lengths_digest(lengths: np.ndarray) -> str:
    """A digest of the sequence lengths: all that the indices depend on in the data."""
    return hashlib.md5(np.ascontiguousarray(lengths).tobytes(), usedforsecurity=False).hexdigest()


def cache_dir(prefix: str | Path, kind: str, data_cache_path: str | None) -> Path:
    """Megatron's place (`{prefix}/cache/{kind}_indices`) unless `data_cache_path` is given."""
    if data_cache_path:
        return Path(data_cache_path)
    return Path(f"{prefix}") / "cache" / f"{kind}_indices"


def cached_arrays(
    folder: Path,
    kind: str,
    split: str,
    description: dict,
    names: tuple[str, ...],
    build: Callable[[], tuple[np.ndarray, ...]],
) -> tuple[np.ndarray, ...]:
    """Load the named arrays from `folder`, or build and save them."""
    text = json.dumps(description, indent=4, sort_keys=True)
    digest = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()
    base = f"{digest}-{kind}-{split}"
    desc_path = folder / f"{base}-description.txt"
    paths = [folder / f"{base}-{name}.npy" for name in names]
    if desc_path.is_file() and all(p.is_file() for p in paths):
        try:
            return tuple(np.load(p, mmap_mode="r", allow_pickle=False) for p in paths)
        except (OSError, ValueError):
            pass  # unreadable (not written by us, or damaged): build it again below
    arrays = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, arr in zip(paths, arrays, strict=True):
            with atomic_file(path) as tmp, open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
        with atomic_file(desc_path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise AtelierError(
            f"{folder}: cannot write the {kind} index cache ({e.strerror or e}); "
            "give data_cache_path a writable folder"
        ) from None
    return arrays

"""A tokenizer folder, loaded once: kept by the SHA-256 of its files for the next run.

Why: loading a Hugging Face folder means importing transformers, which imports torch:
about 2.5 s of the main process before any worker has a job, a third of a 200 MiB run
once the encoder is fast (docs/benchmarks.md). What the load yields (`LoadedTokenizer`:
the serialised Rust tokenizer and the special ids) is plain data determined by the
folder's files and the library versions, so it is kept under `user_cache("tokenizers")`
and a later run with the same folder reads it back in milliseconds.

The key covers the folder's path and every file in it: the content of each file
transformers could read (not weights, under 64 MiB), the size and mtime of the others, plus
the transformers and tokenizers versions and `use_fast`. Any edit to the folder, or an
upgrade, is a miss and a fresh load. `ATELIER_TOKENIZER_CACHE=0` turns the cache off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from atelier.core.paths import user_cache

CACHE_VERSION = 1  # bump when LoadedTokenizer or _load_hf changes what a load yields
KEEP = 16  # entries kept (each about the size of its tokenizer.json)
MAX_HASHED = 64 << 20  # larger files are weights, not tokenizer files: size and mtime only
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")


def enabled() -> bool:
    return os.environ.get("ATELIER_TOKENIZER_CACHE", "1") != "0"


def folder_key(folder: Path, use_fast: bool) -> str | None:
    """What a load of `folder` depends on, hashed; None when the folder can't be read."""
    h = hashlib.sha256()
    versions = [_version(m) for m in ("transformers", "tokenizers")]
    h.update(f"atelier-tokenizer {CACHE_VERSION}|{versions}|use_fast={use_fast}\0".encode())
    try:
        # the folder itself too: a slow tokenizer's load names it (`slow_path`), so a copy
        # elsewhere must not be handed the original's path
        h.update(f"{folder.resolve()}\0".encode())
        for p in sorted(folder.iterdir()):
            st = p.stat()
            if not p.is_file():
                continue
            h.update(f"{p.name}\0{st.st_size}\0".encode())
            if st.st_size > MAX_HASHED or p.name.lower().endswith(WEIGHTS):
                h.update(f"{st.st_mtime_ns}\0".encode())
            else:
                h.update(p.read_bytes())
    except OSError:
        return None
    return h.hexdigest()


def _version(module: str) -> str:
    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "none"


def read(key: str, kind: type) -> Any | None:
    """The `kind` (LoadedTokenizer) stored under `key`, or None (missing or unreadable)."""
    try:
        data = json.loads((user_cache("tokenizers") / f"{key}.json").read_text("utf-8"))
        fields = {f.name: f for f in dataclasses.fields(kind)}
        if set(data) != set(fields):
            return None
        tuples = {n for n, f in fields.items() if str(f.type).startswith("tuple")}
        return kind(**{n: tuple(v) if n in tuples else v for n, v in data.items()})
    except (OSError, ValueError, TypeError):
        return None


def write(key: str, loaded: Any) -> None:
    """Store `loaded`; a full or read-only cache only costs the load next time."""
    from atelier.core.atomic import write_text_atomic

    folder = user_cache("tokenizers")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / f"{key}.json", json.dumps(dataclasses.asdict(loaded)))
        entries = sorted(folder.glob("[0-9a-f]" * 64 + ".json"), key=_mtime, reverse=True)
        for old in entries[KEEP:]:  # only our own entries: named by a SHA-256
            old.unlink(missing_ok=True)
    except OSError:
        pass


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0

"""Megatron's indexed dataset (`MMIDIDX`) format: a `.bin` of token ids and an `.idx`.

The `.idx` layout, as megatron-core's `_IndexWriter` writes it (little endian):
magic `MMIDIDX\\x00\\x00`, u64 version 1, u8 dtype code, u64 sequence count,
u64 document count (= documents + 1), int32 sequence lengths, int64 byte pointers,
int64 document indices (starting with 0). Writing the same ids through
`IndexedWriter` and megatron-core's `IndexedDatasetBuilder` gives identical bytes.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from atelier.core.atomic import settle, temp_sibling
from atelier.core.errors import AtelierError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items()}


def optimal_dtype(vocab_size: int | None) -> type[np.number]:
    """uint16 under 65500 ids, else int32 (megatron-core's `DType.optimal_dtype`)."""
    return np.uint16 if vocab_size is not None and vocab_size < 65500 else np.int32


def bin_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.bin")


def idx_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.idx")


class IndexedWriter:
    """Streams sequences into a temporary `.bin`; `finish()` writes the `.idx`.

    Only the per-sequence lengths are kept in memory (4 bytes each), so memory does
    not grow with the amount of text. Both files get temporary names next to the
    final ones; the caller renames them with `atelier.core.atomic.commit_files`.
    """

    def __init__(self, prefix: str | Path, dtype: type[np.number]) -> None:
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_OF:
            raise ValueError(f"unsupported dtype {self.dtype}")
        for final in (bin_path(prefix), idx_path(prefix)):
            if final.is_dir():  # found before the work, not at the final rename
                raise AtelierError(f"{final} is a folder; move it or choose another prefix")
        self.tmp_bin = temp_sibling(bin_path(prefix))
        self.tmp_idx = temp_sibling(idx_path(prefix))
        self._bin: BinaryIO = open(self.tmp_bin, "wb")  # noqa: SIM115 (closed in finish/abort)
        self.lengths = array("i")
        self.doc_ends = array("q", [0])
        self.tokens = 0

    def add_documents(
        self, flat: np.ndarray, lengths: np.ndarray, per_doc: np.ndarray | None = None
    ) -> None:
        """Append documents back to back: `lengths` per sequence, `per_doc` sequences
        per document (one each when omitted, Megatron's document level)."""
        if len(lengths) == 0:
            return
        data = np.ascontiguousarray(flat, dtype=self.dtype)
        self._bin.write(data)  # the array's buffer itself: no copy
        start = len(self.lengths)
        self.lengths.frombytes(np.asarray(lengths, dtype=np.int32).tobytes())
        if per_doc is None:
            ends = np.arange(start + 1, start + len(lengths) + 1, dtype=np.int64)
        else:
            ends = start + np.cumsum(np.asarray(per_doc, dtype=np.int64))
        self.doc_ends.frombytes(ends.tobytes())
        self.tokens += int(data.size)

    def add_sequence(self, ids: np.ndarray) -> None:
        self.add_documents(ids, np.array([len(ids)], dtype=np.int32))

    def append_raw(self, src_bin: Path, lengths: np.ndarray, doc_ends: np.ndarray) -> None:
        """Append another dataset of the same dtype by copying its `.bin` (merge)."""
        with open(src_bin, "rb") as src:
            if not _copy_in_kernel(src, self._bin):
                while chunk := src.read(16 << 20):
                    self._bin.write(chunk)
        offset = len(self.lengths)
        self.lengths.frombytes(np.asarray(lengths, dtype=np.int32).tobytes())
        self.doc_ends.frombytes((np.asarray(doc_ends[1:], dtype=np.int64) + offset).tobytes())
        self.tokens += int(np.asarray(lengths, dtype=np.int64).sum())

    def finish(self) -> list[tuple[Path, Path]]:
        """Close the data, write the index; return (temporary, final) pairs to commit."""
        self._bin.close()
        lengths = np.frombuffer(self.lengths, dtype=np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths) > 1:
            np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        docs = np.frombuffer(self.doc_ends, dtype=np.int64)
        with open(self.tmp_idx, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<Q", VERSION))
            f.write(struct.pack("<B", CODE_OF[self.dtype]))
            f.write(struct.pack("<Q", len(lengths)))
            f.write(struct.pack("<Q", len(docs)))
            f.write(lengths.tobytes())
            f.write(pointers.tobytes())
            f.write(docs.tobytes())
        return [(self.tmp_bin, bin_path(self.prefix)), (self.tmp_idx, idx_path(self.prefix))]

    def abort(self) -> None:
        self._bin.close()
        self.tmp_bin.unlink(missing_ok=True)
        self.tmp_idx.unlink(missing_ok=True)


@dataclass
class IndexedReader:
    """Memory-mapped read access to one `{prefix}.bin/.idx` pair."""

    prefix: Path
    dtype: np.dtype
    lengths: np.ndarray
    pointers: np.ndarray
    doc_ends: np.ndarray
    data: np.ndarray

    @classmethod
    def open(cls, prefix: str | Path) -> IndexedReader:
        """Open a pair as one consistent snapshot, even while a writer commits.

        A commit in progress is waited for (a killed one completed) first. The
        pair is opened by descriptor and both names are checked to still point
        at what was opened; if a commit slipped in between, it is read again.
        """
        prefix = Path(prefix)
        ipath, bpath = idx_path(prefix), bin_path(prefix)
        for attempt in range(50):
            settle(ipath)
            missing = [p for p in (ipath, bpath) if not p.is_file()]
            if missing:
                if settle(ipath) or (ipath.is_file() and bpath.is_file()):
                    continue  # a commit was between its two renames
                if missing == [ipath] and attempt < 49:
                    # a .bin without its .idx is what a commit looks like between removing
                    # the old index and renaming the new one; a writer committing in a loop
                    # can start the next commit before settle() looks again
                    time.sleep(0.002 * (attempt + 1))
                    continue
                raise AtelierError(f"{missing[0]}: not found (expected a Megatron .bin/.idx pair)")
            try:
                with open(ipath, "rb") as fi, open(bpath, "rb") as fb:
                    if _same_file(ipath, fi) and _same_file(bpath, fb):
                        return cls._from_files(prefix, fi, fb)
            except FileNotFoundError:
                pass
            time.sleep(0.01 * attempt)
        raise AtelierError(f"{ipath}: kept changing while being opened; is a writer looping?")

    @classmethod
    def _from_files(cls, prefix: Path, fi: BinaryIO, fb: BinaryIO) -> IndexedReader:
        ipath, bpath = idx_path(prefix), bin_path(prefix)
        isize = os.fstat(fi.fileno()).st_size
        if isize < 34:
            raise AtelierError(
                f"{ipath}: not a Megatron index ({isize} bytes); was it written fully?"
            )
        raw = np.memmap(fi, dtype=np.uint8, mode="r")
        if bytes(raw[:9]) != MAGIC:
            raise AtelierError(f"{ipath}: not a Megatron index (bad magic); was it written fully?")
        version, code, n_seq, n_doc = struct.unpack("<QBQQ", bytes(raw[9:34]))
        if version != VERSION or code not in DTYPE_CODES:
            raise AtelierError(f"{ipath}: unsupported index version {version} or dtype {code}")
        dtype = np.dtype(DTYPE_CODES[code])
        off = 34
        expected = off + n_seq * 4 + n_seq * 8 + n_doc * 8
        if raw.size < expected:
            raise AtelierError(f"{ipath}: truncated index ({raw.size} of {expected} bytes)")
        lengths = np.frombuffer(raw, dtype=np.int32, count=n_seq, offset=off)
        off += n_seq * 4
        pointers = np.frombuffer(raw, dtype=np.int64, count=n_seq, offset=off)
        off += n_seq * 8
        docs = np.frombuffer(raw, dtype=np.int64, count=n_doc, offset=off)
        total = int(lengths.astype(np.int64).sum())
        size = os.fstat(fb.fileno()).st_size
        if size != total * dtype.itemsize:
            raise AtelierError(
                f"{bpath}: holds {size} bytes but the index describes {total * dtype.itemsize}"
            )
        data = np.memmap(fb, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)
        return cls(prefix, dtype, lengths, pointers, docs, data)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_documents(self) -> int:
        return len(self.doc_ends) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.astype(np.int64).sum())

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return np.asarray(self.data[start : start + int(self.lengths[i])])


_NO_KERNEL_COPY = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


def _copy_in_kernel(src: BinaryIO, dst: BinaryIO) -> bool:
    """Append all of `src` to `dst` with `copy_file_range` (no trip through Python's
    memory; a reflink on filesystems that share blocks). False: not supported here."""
    if not hasattr(os, "copy_file_range"):  # Linux only
        return False
    dst.flush()
    copied = 0
    while True:
        try:
            n = os.copy_file_range(src.fileno(), dst.fileno(), 1 << 30)
        except OSError as e:
            if copied == 0 and e.errno in _NO_KERNEL_COPY:
                return False
            raise
        if n == 0:
            return True
        copied += n


def _same_file(path: Path, f: BinaryIO) -> bool:
    try:
        a, b = os.stat(path), os.fstat(f.fileno())
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def exists(prefix: str | Path) -> bool:
    return idx_path(prefix).is_file() and bin_path(prefix).is_file()

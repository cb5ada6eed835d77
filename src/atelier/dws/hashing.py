"""PostgreSQL / openGauss hash functions and the DWS row-placement model, in numpy.

The offline path (`--file`) must put every row on the same data node (DN) as the
in-database path, so these are bit-exact re-implementations of the server's own
functions (Bob Jenkins' lookup3 as in PostgreSQL's `hash_bytes`/`hash_bytes_uint32`),
verified against the live server in tests/dws/test_hashing.py:

- `hashint2/hashint4` = hash_uint32 of the value as uint32; `hashint8` folds the int64
  (lo ^ hi, or lo ^ ~hi for negatives), so every integer type in int4 range hashes alike.
- `hashtext` = hash_bytes of the UTF-8 bytes (deterministic collation); `hashbpchar`
  the same after dropping trailing spaces.
- `hash_numeric` = hash_bytes of the base-10000 int16 digits (leading/trailing zero digits
  removed) XOR the weight; 0 hashes to -1 and NaN to 0.
- dates hash as hashint4(days since 2000-01-01); timestamp(tz) and time as
  hashint8(microseconds since 2000-01-01 UTC / since midnight).

Placement model (openGauss/DWS `hashValueCombination` + bucket map): the key's hash
starts at 0 and, per key column, is rotated left by one bit and XORed with the
column's hash (NULL hashes to 0); bucket = abs(int32 hash) & 16383; DN = bucket % N.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

import numpy as np

U32 = np.uint32
MASK32 = 0xFFFFFFFF
BUCKETS = 16384
_INIT = 0x9E3779B9 + 3923095


def _rot(x: np.ndarray, k: int) -> np.ndarray:
    return (x << U32(k)) | (x >> U32(32 - k))


def _mix(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    a -= c
    a ^= _rot(c, 4)
    c += b
    b -= a
    b ^= _rot(a, 6)
    a += c
    c -= b
    c ^= _rot(b, 8)
    b += a
    a -= c
    a ^= _rot(c, 16)
    c += b
    b -= a
    b ^= _rot(a, 19)
    a += c
    c -= b
    c ^= _rot(b, 4)
    b += a


def _final(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    c ^= b
    c -= _rot(b, 14)
    a ^= c
    a -= _rot(c, 11)
    b ^= a
    b -= _rot(a, 25)
    c ^= b
    c -= _rot(b, 16)
    a ^= c
    a -= _rot(c, 4)
    b ^= a
    b -= _rot(a, 14)
    c ^= b
    c -= _rot(b, 24)


def hash_uint32(k: np.ndarray) -> np.ndarray:
    """PostgreSQL `hash_bytes_uint32`: uint32 in, uint32 out."""
    k = np.asarray(k).astype(U32, copy=False)
    a = np.full(k.shape, (_INIT + 4) & MASK32, dtype=U32)
    b = a.copy()
    c = a.copy()
    with np.errstate(over="ignore"):
        a += k
        _final(a, b, c)
    return c


def hashint4(values: np.ndarray) -> np.ndarray:
    """`hashint4`/`hashint2`/date hashing: signed int32 result."""
    v = np.asarray(values).astype(np.int64, copy=False)
    return hash_uint32((v & MASK32).astype(U32)).view(np.int32)


def hashint8(values: np.ndarray) -> np.ndarray:
    """`hashint8` (also timestamp, timestamptz and time): signed int32 result."""
    v = np.asarray(values).astype(np.int64, copy=False)
    lo = (v & MASK32).astype(U32)
    hi = ((v >> 32) & MASK32).astype(U32)
    lo ^= np.where(v >= 0, hi, ~hi)
    return hash_uint32(lo).view(np.int32)


def _words(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = block.view("<u4")
    return w[:, 0].astype(U32), w[:, 1].astype(U32), w[:, 2].astype(U32)


def _hash_padded(padded: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """lookup3 `hash_bytes` over rows of a zero-padded byte matrix (width a multiple of 12)."""
    n = len(lengths)
    a = ((lengths.astype(np.int64) + _INIT) & MASK32).astype(U32)
    b = a.copy()
    c = a.copy()
    blocks = lengths // 12  # full 12-byte blocks that are mixed; the rest is the tail
    with np.errstate(over="ignore"):
        for i in range(int(blocks.max(initial=0)) + 1):
            w0, w1, w2 = _words(np.ascontiguousarray(padded[:, 12 * i : 12 * i + 12]))
            full = blocks > i
            if full.any():
                aa, bb, cc = a[full] + w0[full], b[full] + w1[full], c[full] + w2[full]
                _mix(aa, bb, cc)
                a[full], b[full], c[full] = aa, bb, cc
            tail = blocks == i
            # the tail's third word goes in shifted: c's low byte is reserved for the length
            a[tail] += w0[tail]
            b[tail] += w1[tail]
            c[tail] += w2[tail] << U32(8)
        _final(a, b, c)
    assert len(c) == n
    return c


def hash_bytes(items: Sequence[bytes], chunk: int = 65536) -> np.ndarray:
    """PostgreSQL `hash_any` over each byte string; signed int32 results.

    Rows are processed in chunks sorted by length, so padding stays small and memory
    stays bounded even with a few very long values.
    """
    n = len(items)
    out = np.empty(n, dtype=np.int32)
    if n == 0:
        return out
    lengths = np.fromiter((len(x) for x in items), dtype=np.int64, count=n)
    order = np.argsort(lengths, kind="stable")
    for start in range(0, n, chunk):
        idx = order[start : start + chunk]
        lens = lengths[idx]
        width = (int(lens.max()) // 12 + 1) * 12
        joined = b"".join(items[i] for i in idx)
        flat = np.frombuffer(joined, dtype=np.uint8)
        padded = np.zeros((len(idx), width), dtype=np.uint8)
        if flat.size:
            rows = np.repeat(np.arange(len(idx)), lens)
            starts = np.cumsum(lens) - lens
            cols = np.arange(flat.size) - np.repeat(starts, lens)
            padded[rows, cols] = flat
        out[idx] = _hash_padded(padded, lens).view(np.int32)
    return out


def hashtext(values: Iterable[str]) -> np.ndarray:
    return hash_bytes([v.encode("utf-8") for v in values])


def hashbpchar(values: Iterable[str]) -> np.ndarray:
    """char(n): trailing spaces are not significant, so they are not hashed."""
    return hash_bytes([v.encode("utf-8").rstrip(b" ") for v in values])


def numeric_digits(value: Decimal) -> tuple[list[int], int] | None:
    """Base-10000 digits and weight as PostgreSQL stores a numeric; None for NaN/inf.

    Leading and trailing zero digits are dropped (hash_numeric ignores them), so an
    empty digit list means zero.
    """
    if not value.is_finite():
        return None
    _sign, digits, exp = value.as_tuple()
    text = "".join(map(str, digits))
    pad = exp % 4  # align the decimal point to a base-10000 digit boundary
    text += "0" * pad
    exp -= pad
    text = "0" * (-len(text) % 4) + text
    groups = [int(text[i : i + 4]) for i in range(0, len(text), 4)]
    weight = len(groups) - 1 + exp // 4
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    return groups, weight


def hash_numeric(values: Sequence[Decimal]) -> np.ndarray:
    """`hash_numeric`: digits hashed with hash_any, then XOR weight; 0 -> -1, NaN -> 0."""
    n = len(values)
    out = np.zeros(n, dtype=np.int32)
    payloads: list[bytes] = []
    where: list[int] = []
    weights: list[int] = []
    for i, v in enumerate(values):
        parts = numeric_digits(Decimal(v))
        if parts is None:
            out[i] = 0
        elif not parts[0]:
            out[i] = -1
        else:
            payloads.append(np.asarray(parts[0], dtype="<i2").tobytes())
            where.append(i)
            weights.append(parts[1])
    if payloads:
        h = hash_bytes(payloads).view(U32)
        w = (np.asarray(weights, dtype=np.int64) & MASK32).astype(U32)
        out[np.asarray(where)] = (h ^ w).view(np.int32)
    return out


def combine(hashes: Sequence[np.ndarray]) -> np.ndarray:
    """Multi-column key hash: rotate the running hash left by 1, XOR the next column's."""
    acc = np.zeros(len(hashes[0]), dtype=U32)
    for h in hashes:
        acc = _rot(acc, 1) ^ np.asarray(h).view(U32)
    return acc.view(np.int32)


def bucket_of(key_hash: np.ndarray) -> np.ndarray:
    """abs(int32 hash) & 16383, computed in int64 so abs(INT_MIN) wraps like C (bucket 0)."""
    return (np.abs(np.asarray(key_hash).astype(np.int64)) & (BUCKETS - 1)).astype(np.int64)


def node_of(bucket: np.ndarray, nodes: int) -> np.ndarray:
    return np.asarray(bucket) % nodes

"""Give freed tensor memory back to the operating system between layers.

Layer-sized tensors (8-32 MB for a 1B model) fall under glibc's mmap threshold, so they
live in the heap, and freed heap pages are not returned until `malloc_trim`: without it
a streaming conversion's RSS creeps towards the size of everything it ever held.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():  # -> ctypes function or None
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        return None


def release_freed_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

"""Give freed heap memory back to the operating system once a model's queue goes quiet.

A forward pass allocates its activations (for a SPLADE model, batch x length x 30,522 floats)
and frees them when it ends; glibc keeps much of that freed memory in its arenas, so a
server's RSS reflects its busiest moment long after. ``malloc_trim`` returns it. It walks the
heap, so the batch threads call it only after a quiet spell, never between passes under load.
Elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def release_freed_memory() -> bool:
    """Return freed heap memory to the OS; True where the C library can."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True

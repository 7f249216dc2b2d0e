"""Give freed heap memory back to the operating system once a model's queue goes quiet, and keep
the loaded models' objects out of Python's garbage collector's full passes.

A forward pass allocates its activations (for a SPLADE model, batch x length x 30,522 floats)
and frees them when it ends; glibc keeps much of that freed memory in its arenas, so a
server's RSS reflects its busiest moment long after. ``malloc_trim`` returns it. It walks the
heap, so the batch threads call it only after a quiet spell, never between passes under load.
Elsewhere than glibc this is a no-op.

:func:`settle_heap` runs once start-up has loaded its models, after each later load, and after
an unload. A server with its models loaded holds
about 480,000 objects the collector tracks (torch, transformers, the models' modules; measured
here with the default catalogue), and a full collection walks every one: 300 ms with the
process's GIL held, so the event loop, ``/health`` included, stands still. Under load, requests'
short-lived objects set off such a collection every few seconds. ``gc.freeze`` moves the objects
alive now out of the collector's generations: later collections walk only what is newer.
Reference counting still frees frozen objects; only garbage cycles among them wait for the next
settle, which starts by unfreezing and collecting, so an unloaded model's cycles are freed.

What the collector still walks under load is the load itself: each connection's and each
request in progress's objects. Under a flood of 2,000 clients that is about 180,000 objects, and
a full collection of them held the event loop for 85-155 ms (measured here). Python runs one once
the objects promoted to the oldest generation since the last reach a quarter of it, and requests
in progress are promoted while they wait for the model even though reference counting frees them
soon after, so under the flood one ran every 3 s, and each one made a hundred 429s wait. The
settle also lets a full collection run only after 100 collections of the middle generation
(``FULL_EVERY``; Python's default is 10): one every ~30 s under that flood, none in a 10 s one.
Garbage cycles that reach the oldest generation wait that much longer to be freed; a served
request's own objects form none (``api/connections.HeadWithBody``), so reference counting frees
them when it ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
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


# The collections of the middle generation before a full one may run (Python's default: 10).
FULL_EVERY = 100


def settle_heap() -> None:
    """Collect every generation, then freeze the survivors, and make full collections rarer
    (``FULL_EVERY``; module docstring); takes one full collection's time (about 300 ms with the
    default catalogue loaded)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)

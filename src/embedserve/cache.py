"""The embedding cache: a text's raw model output, kept so the same text is not computed again.

What is kept, per input: the model's raw output for it (the dense row before ``dimensions``,
normalization and precision, or the sparse vector before ``top_k``) and its token counts (read
and before truncation), so a hit answers with the same ``usage`` and the same over-long error as a
computed input, and every per-request option applied after the model is applied to a hit too.
Those options are therefore not part of the key. The key is everything that changes the raw output
for one text: the model (id, engine, backend, quantization, dtype, device, source and its files,
the versions of the libraries that compute it: :func:`fingerprint`), what is computed (dense or
sparse, the sparse side), the resolved prompt, the token limit and the side truncation cuts, and
the text. It is a BLAKE2b digest of a canonical encoding of those parts, so a key is 16 bytes
whatever the text's length.

Two tiers, both optional: an LRU in this process bounded by bytes (:class:`MemoryLRU`, the
``cache_bytes`` setting), and Redis shared by several processes (``cache_redis``, the
``cache_url`` setting). A lookup asks memory first, then Redis for what memory lacks; Redis hits
are copied into memory. Values are stored as compact bytes (:func:`encode`: dtype, shape and the
raw bytes of each array), so a cached vector is bit-for-bit the one the model gave.

Everything here runs on the event loop (no locks): a lookup or store of the memory tier is a few
dict operations, and the Redis tier never raises (a slow or absent Redis is a miss).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from embedserve import __version__
from embedserve.engines.base import SparseVector

if TYPE_CHECKING:
    from embedserve.catalog import CatalogEntry
    from embedserve.settings import Settings

log = logging.getLogger(__name__)

FORMAT = 1  # of the key and the stored bytes: a change makes every older entry a miss
# What one memory entry costs beyond its value's bytes: the key (a 16-byte bytes object), the
# OrderedDict's slot and link, the entry tuple and the value's bytes header (measured with
# tracemalloc in tests/unit/test_cache.py, which checks the bound holds).
ENTRY_OVERHEAD = 240
_LIBRARIES = ("torch", "transformers", "sentence-transformers", "tokenizers", "onnxruntime", "openvino", "nncf")
_HEADER = struct.Struct("<2sBBIIB")  # magic, format, kind, tokens read, tokens before truncation, arrays
_ARRAY = struct.Struct("<4sBI")  # dtype (numpy's str, e.g. '<f4'), dimensions, first dimension's length
_MAGIC = b"es"
_DENSE, _SPARSE = 0, 1


@dataclass(frozen=True, slots=True)
class Cached:
    """One input's raw model output with its token counts (as :class:`~embedserve.engines.base.Tokens`
    has them, so a hit and a computed unit are counted the same way)."""

    output: Any  # a 1-D array (dense) or a SparseVector
    cost: int  # tokens the model read, after truncation
    original: int  # tokens before truncation


def encode(value: Cached) -> bytes:
    """``value`` as bytes: a header, then each array's dtype, shape and raw bytes (C order)."""
    arrays: list[np.ndarray[Any, Any]]
    if isinstance(value.output, SparseVector):
        kind, arrays = _SPARSE, [value.output.indices, value.output.values]
    else:
        kind, arrays = _DENSE, [np.asarray(value.output)]
    parts = [_HEADER.pack(_MAGIC, FORMAT, kind, value.cost, value.original, len(arrays))]
    for array in arrays:
        if array.ndim != 1:
            raise ValueError(f"the cache keeps 1-D arrays; got shape {array.shape}. This is a bug.")
        parts.append(_ARRAY.pack(array.dtype.str.encode("ascii").ljust(4), 1, array.shape[0]))
        parts.append(np.ascontiguousarray(array).tobytes())
    return b"".join(parts)


def decode(data: bytes) -> Cached:
    """The value :func:`encode` wrote (its arrays are read-only views of ``data``); ValueError for
    bytes it did not write."""
    if len(data) < _HEADER.size:
        raise ValueError("not a cached embedding: too short")
    magic, version, kind, cost, original, count = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != FORMAT or kind not in (_DENSE, _SPARSE):
        raise ValueError("not a cached embedding of this format")
    offset, arrays = _HEADER.size, []
    for _ in range(count):
        dtype_str, ndim, length = _ARRAY.unpack_from(data, offset)
        dtype = np.dtype(dtype_str.rstrip(b" ").decode("ascii"))
        offset += _ARRAY.size
        size = dtype.itemsize * length
        if ndim != 1 or offset + size > len(data):
            raise ValueError("not a cached embedding: truncated")
        arrays.append(np.frombuffer(data, dtype=dtype, count=length, offset=offset))
        offset += size
    if offset != len(data) or len(arrays) != (2 if kind == _SPARSE else 1):
        raise ValueError("not a cached embedding: wrong length")
    output = SparseVector(arrays[0], arrays[1]) if kind == _SPARSE else arrays[0]
    return Cached(output, cost, original)


@dataclass(frozen=True)
class KeyParts:
    """What, besides the model and the text, changes a raw output (see the module docstring)."""

    kind: str  # "dense" or "sparse"
    prompt: str | None  # resolved: the text the model reads before the input
    limit: int  # tokens read at most (the model's, or a lower cap the request set)
    side: str  # which end truncation cuts
    task: str | None = None  # the sparse side (query, document) a Router model routes by
    extra: tuple[Any, ...] = ()  # further options that change the output (JSON-encodable)


def fingerprint(entry: CatalogEntry, device: str) -> bytes:
    """The model's part of every key: the catalogue fields that change its outputs, its source and
    the names, sizes and modification times of the source's files (so replaced weights are new
    keys), the device, and the versions of embedserve and of the libraries that compute outputs."""
    spec = entry.spec
    fields = {
        "id": entry.id,
        "name": spec.name,
        "source": [entry.source.kind, entry.source.location],
        "revision": spec.revision,
        "engine": spec.engine_name,
        "backend": spec.backend,
        "quantize": spec.quantize,
        "dtype": spec.dtype,
        "max_length": spec.max_length,
        "trust_remote_code": spec.trust_remote_code,
        "device": device,
        "files": _files(entry.source.location) if entry.source.kind != "hub" else None,
        "versions": {"embedserve": __version__, **{name: _version(name) for name in _LIBRARIES}},
    }
    return hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=32).digest()


def _files(location: str) -> list[tuple[str, int, int]]:
    root = Path(location)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        stat = path.stat()
        out.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns))
    return out


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def keys(model: bytes, parts: KeyParts, texts: Sequence[str]) -> list[bytes]:
    """One 16-byte key per text: BLAKE2b of the request's parts (hashed once) and the text."""
    encoded = json.dumps([FORMAT, parts.kind, parts.prompt, parts.limit, parts.side, parts.task, list(parts.extra)])
    prefix = hashlib.blake2b(model + encoded.encode(), digest_size=32).digest()
    return [hashlib.blake2b(prefix + text.encode("utf-8"), digest_size=16).digest() for text in texts]


class MemoryLRU:
    """Encoded values by key, least recently used first out, holding at most ``max_bytes`` (each
    entry counted as its value's length plus :data:`ENTRY_OVERHEAD`). Bytes held and evictions are
    kept per model, for ``/metrics``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[bytes, str]] = OrderedDict()
        self.bytes_by_model: dict[str, int] = {}
        self.evictions: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` (now the most recently used), or None."""
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: bytes, value: bytes, model: str) -> None:
        """Keep ``value`` under ``key``, evicting the least recently used until it fits; a value
        larger than the whole bound is not kept."""
        size = len(value) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._forget(old, count=False)
        while self.bytes + size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._forget(evicted, count=True)
        self._entries[key] = (value, model)
        self.bytes += size
        self.bytes_by_model[model] = self.bytes_by_model.get(model, 0) + size

    def _forget(self, entry: tuple[bytes, str], *, count: bool) -> None:
        value, model = entry
        size = len(value) + ENTRY_OVERHEAD
        self.bytes -= size
        self.bytes_by_model[model] -= size
        if count:
            self.evictions[model] = self.evictions.get(model, 0) + 1


class SharedTier(Protocol):
    """A cache several processes share (``cache_redis.RedisTier``). It never raises: a value it
    cannot get is None, a store it cannot make is dropped, and it counts its errors."""

    errors: dict[str, int]

    async def get_many(self, keys: Sequence[bytes], model: str) -> list[bytes | None]: ...

    def put_many(self, items: Sequence[tuple[bytes, bytes]], model: str) -> None: ...

    async def close(self) -> None: ...


@dataclass
class Counts:
    """Lookups answered (hits) and not (misses), per (model, tier)."""

    hits: dict[tuple[str, str], int] = field(default_factory=dict)
    misses: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, model: str, tier: str, hits: int, misses: int) -> None:
        if hits:
            self.hits[model, tier] = self.hits.get((model, tier), 0) + hits
        if misses:
            self.misses[model, tier] = self.misses.get((model, tier), 0) + misses


class EmbeddingCache:
    """The tiers together: memory (when ``max_bytes`` > 0), then the shared tier (when given)."""

    def __init__(self, max_bytes: int, shared: SharedTier | None = None) -> None:
        self.memory = MemoryLRU(max_bytes) if max_bytes > 0 else None
        self.shared = shared
        self.counts = Counts()
        self._fingerprints: dict[tuple[str, str, int], bytes] = {}

    @property
    def enabled(self) -> bool:
        return self.memory is not None or self.shared is not None

    def model_key(self, entry: CatalogEntry, engine: object) -> bytes:
        """:func:`fingerprint` of the model, computed once per loaded engine."""
        device = str(getattr(engine, "device", ""))
        memo = (entry.id, device, id(engine))
        found = self._fingerprints.get(memo)
        if found is None:
            found = self._fingerprints[memo] = fingerprint(entry, device)
        return found

    async def get_many(self, keys: Sequence[bytes], model: str) -> list[Cached | None]:
        """The cached value of each key, or None; counted per tier."""
        found: list[bytes | None] = [None] * len(keys)
        if self.memory is not None:
            found = [self.memory.get(k) for k in keys]
            hits = sum(v is not None for v in found)
            self.counts.add(model, "memory", hits, len(keys) - hits)
        missing = [i for i, v in enumerate(found) if v is None]
        if self.shared is not None and missing:
            shared = await self.shared.get_many([keys[i] for i in missing], model)
            hits = 0
            for i, value in zip(missing, shared, strict=True):
                if value is not None:
                    found[i] = value
                    hits += 1
                    if self.memory is not None:
                        self.memory.put(keys[i], value, model)
            self.counts.add(model, "redis", hits, len(missing) - hits)
        out: list[Cached | None] = []
        for value in found:
            try:
                out.append(None if value is None else decode(value))
            except ValueError:  # not ours (another program's key in a shared Redis): computed anew
                out.append(None)
        return out

    def put_many(self, items: Sequence[tuple[bytes, Cached]], model: str) -> None:
        """Keep each computed value under its key, in every tier (the shared tier's stores are sent
        in the background)."""
        encoded = [(key, encode(value)) for key, value in items]
        if self.memory is not None:
            for key, data in encoded:
                self.memory.put(key, data, model)
        if self.shared is not None and encoded:
            self.shared.put_many(encoded, model)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()


def from_settings(settings: Settings) -> EmbeddingCache | None:
    """The cache the settings ask for (``cache_bytes``, ``cache_url``); None when both are off."""
    shared: SharedTier | None = None
    if settings.cache_url:
        from embedserve.cache_redis import RedisTier

        shared = RedisTier(settings.cache_url, timeout=settings.cache_timeout, ttl=settings.cache_ttl)
    if not settings.cache_bytes and shared is None:
        return None
    return EmbeddingCache(settings.cache_bytes, shared)

"""The embedding cache's plain parts: the stored bytes, the keys, and the in-process LRU's bound
and order (the tiers together, Redis included, are tested in tests/e2e/test_cache_redis.py)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers.server import ROOT

from embedserve import cache
from embedserve.cache import ENTRY_OVERHEAD, Cached, KeyParts, MemoryLRU, decode, encode, fingerprint, keys
from embedserve.catalog import CatalogEntry, parse_catalog
from embedserve.engines.base import SparseVector


def _key(i: int) -> bytes:
    return hashlib.blake2b(str(i).encode(), digest_size=16).digest()


def test_a_dense_row_comes_back_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    row = rng.standard_normal(384).astype(np.float32)
    row[:3] = [-0.0, np.inf, np.float32(1e-45)]  # a negative zero, an infinity, a subnormal
    back = decode(encode(Cached(row, 12, 300)))
    assert back.cost == 12 and back.original == 300
    assert back.output.dtype == row.dtype and back.output.tobytes() == row.tobytes()


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int8])
def test_other_dtypes_keep_their_dtype(dtype: type) -> None:
    row = np.arange(7).astype(dtype)
    back = decode(encode(Cached(row, 1, 1))).output
    assert back.dtype == row.dtype and back.tobytes() == row.tobytes()


def test_a_sparse_vector_comes_back_bit_for_bit() -> None:
    vector = SparseVector(np.array([3, 17, 30000], dtype=np.int64), np.array([0.5, 1.25, 3e-8], dtype=np.float32))
    back = decode(encode(Cached(vector, 5, 5))).output
    assert isinstance(back, SparseVector)
    assert back.indices.tobytes() == vector.indices.tobytes() and back.indices.dtype == np.int64
    assert back.values.tobytes() == vector.values.tobytes() and back.values.dtype == np.float32


@pytest.mark.parametrize("data", [b"", b"es", b"not an embedding at all", b"es\x01\x00" + b"\x00" * 20])
def test_bytes_it_did_not_write_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a cached embedding"):
        decode(data)


def test_a_truncated_value_is_refused() -> None:
    data = encode(Cached(np.ones(8, dtype=np.float32), 1, 1))
    with pytest.raises(ValueError, match="not a cached embedding"):
        decode(data[:-1])


def test_the_least_recently_used_goes_first() -> None:
    value = b"x" * 100
    lru = MemoryLRU(3 * (len(value) + ENTRY_OVERHEAD))
    for name in (b"a", b"b", b"c"):
        lru.put(name, value, "m")
    assert lru.get(b"a") == value  # a is now the most recent: b is the oldest
    lru.put(b"d", value, "m")
    assert b"b" not in lru and all(k in lru for k in (b"a", b"c", b"d"))
    lru.put(b"e", value, "m")
    assert b"c" not in lru and all(k in lru for k in (b"a", b"d", b"e"))
    assert lru.evictions == {"m": 2}
    assert lru.bytes == lru.bytes_by_model["m"] == 3 * (len(value) + ENTRY_OVERHEAD)


def test_a_value_larger_than_the_bound_is_not_kept() -> None:
    lru = MemoryLRU(1000)
    lru.put(b"small", b"x" * 10, "m")
    lru.put(b"big", b"x" * 1000, "m")
    assert b"big" not in lru and b"small" in lru


def test_replacing_a_key_counts_its_bytes_once() -> None:
    lru = MemoryLRU(10_000)
    lru.put(b"k", b"x" * 100, "m")
    lru.put(b"k", b"y" * 300, "m")
    assert len(lru) == 1 and lru.bytes == 300 + ENTRY_OVERHEAD and lru.evictions == {}


def test_bytes_are_kept_per_model() -> None:
    lru = MemoryLRU(2 * (100 + ENTRY_OVERHEAD))
    lru.put(b"1", b"x" * 100, "a")
    lru.put(b"2", b"x" * 100, "b")
    lru.put(b"3", b"x" * 100, "b")  # evicts a's entry
    assert lru.bytes_by_model == {"a": 0, "b": 2 * (100 + ENTRY_OVERHEAD)}
    assert lru.evictions == {"a": 1}


@pytest.mark.parametrize("max_bytes", [1 << 20, 5 << 20])
def test_the_bound_holds_over_a_long_run_of_unique_texts(max_bytes: int) -> None:
    """The counted bytes never pass the bound, and the memory the LRU really takes (tracemalloc)
    stays within it: ENTRY_OVERHEAD is not an underestimate."""
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((64, 384)).astype(np.float32)
    lru = MemoryLRU(max_bytes)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        peak_counted = 0
        for i in range(6 * max_bytes // 1500):
            lru.put(_key(i), encode(Cached(rows[i % 64], 10, 10)), "m")
            peak_counted = max(peak_counted, lru.bytes)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert peak_counted <= max_bytes
    assert sum(lru.evictions.values()) > len(lru)  # the run was several times the bound
    assert held <= max_bytes * 1.05, f"the LRU takes {held} bytes for a bound of {max_bytes}"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def _entry(location: Path, **changes: object) -> CatalogEntry:
    spec = {"name": str(location), "type": "embeddings", "device": "cpu", **changes}
    return parse_catalog({"models": {"m": spec}}, ROOT).entries["m"]


def test_the_model_part_changes_with_each_catalogue_field_that_changes_outputs(model_dir: Path) -> None:
    base = fingerprint(_entry(model_dir), "cpu")
    assert fingerprint(_entry(model_dir), "cpu") == base
    other = model_dir / "copy"
    other.mkdir()
    changed = [
        fingerprint(_entry(model_dir, backend="onnx"), "cpu"),
        fingerprint(_entry(model_dir, backend="onnx", quantize="int8"), "cpu"),
        fingerprint(_entry(model_dir, dtype="bfloat16"), "cpu"),
        fingerprint(_entry(model_dir, max_length=64), "cpu"),
        fingerprint(_entry(other), "cpu"),
        fingerprint(_entry(model_dir), "cuda:0"),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # what only shapes the response, not the model's output, leaves it alone
    same = _entry(model_dir, normalize=False, dimensions=8, description="x", preload=False, max_inputs=3)
    assert fingerprint(same, "cpu") == fingerprint(_entry(model_dir), "cpu")


def test_the_model_part_changes_when_the_weights_change(model_dir: Path) -> None:
    entry = _entry(model_dir)
    before = fingerprint(entry, "cpu")
    (model_dir / "model.safetensors").write_bytes(b"other weights")  # a different size
    after = fingerprint(entry, "cpu")
    assert after != before
    stat = (model_dir / "model.safetensors").stat()  # the same size, written later
    os.utime(model_dir / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert fingerprint(entry, "cpu") not in (before, after)


def test_each_request_part_and_the_text_change_the_key(model_dir: Path) -> None:
    model = fingerprint(_entry(model_dir), "cpu")
    parts = KeyParts("dense", "query: ", 256, "right")
    base = keys(model, parts, ["a text"])[0]
    assert len(base) == 16 and keys(model, parts, ["a text"])[0] == base
    variants = [
        keys(fingerprint(_entry(model_dir, backend="onnx"), "cpu"), parts, ["a text"]),
        keys(model, replace(parts, kind="sparse"), ["a text"]),
        keys(model, replace(parts, prompt=None), ["a text"]),
        keys(model, replace(parts, prompt="passage: "), ["a text"]),
        keys(model, replace(parts, limit=128), ["a text"]),
        keys(model, replace(parts, side="left"), ["a text"]),
        keys(model, replace(parts, task="document"), ["a text"]),
        keys(model, replace(parts, extra=("chunk", 32)), ["a text"]),
        keys(model, parts, ["a text "]),
        keys(model, parts, ["A text"]),
    ]
    found = [v[0] for v in variants]
    assert len({base, *found}) == len(found) + 1


def test_a_prompt_and_text_split_differently_are_different_keys(model_dir: Path) -> None:
    model = fingerprint(_entry(model_dir), "cpu")
    a = keys(model, KeyParts("dense", "query: a", 256, "right"), ["b"])
    b = keys(model, KeyParts("dense", "query: ", 256, "right"), ["ab"])
    assert a != b


def test_settings_turn_the_tiers_on_and_off() -> None:
    from embedserve.settings import Settings

    assert cache.from_settings(Settings(cache_bytes=0)) is None
    memory_only = cache.from_settings(Settings(cache_bytes=1000))
    assert memory_only is not None and memory_only.memory is not None and memory_only.shared is None
    assert Settings().cache_bytes == 256 * 1024 * 1024  # on by default

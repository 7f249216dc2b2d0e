"""The export cache (engines/export.py): keys, reuse, and damaged or partial entries rebuilt, never loaded."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from embedserve.engines.export import ExportCache, ExportKey, source_revision

KEY = ExportKey("package:some-model", "dense", "onnx", "none", "abc123", ("input_ids", "attention_mask"))


class Builder:
    """Writes a model file (and a weights file) like an export would; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, dest: Path) -> None:
        self.calls += 1
        (dest / "model.onnx").write_bytes(b"graph-%d" % self.calls)
        (dest / "weights.bin").write_bytes(b"\x00" * 1000)


def test_key_changes_with_every_option() -> None:
    names = {
        KEY.directory_name(),
        replace(KEY, quantize="int8").directory_name(),
        replace(KEY, backend="openvino").directory_name(),
        replace(KEY, revision="def456").directory_name(),
        replace(KEY, task="sparse").directory_name(),
        replace(KEY, inputs=("input_ids", "attention_mask", "token_type_ids")).directory_name(),
        replace(KEY, name="package:other").directory_name(),
        replace(KEY, variant="first-token-last-layer").directory_name(),
    }
    assert len(names) == 8
    assert "variant" not in KEY.fields()  # keys without a variant hash as they did before the field
    assert KEY.directory_name() == ExportKey(**KEY.__dict__).directory_name()  # stable
    assert replace(KEY, quantize="int8").directory_name().startswith("some-model-dense-onnx-int8-")


def test_revision_follows_the_files(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    before = source_revision(tmp_path)
    assert source_revision(tmp_path) == before
    (tmp_path / "model.safetensors").write_bytes(b"weights, fine-tuned")
    assert source_revision(tmp_path) != before


def test_second_load_reuses_the_entry_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, build = ExportCache(tmp_path), Builder()
    with caplog.at_level(logging.INFO, logger="embedserve.engines.export"):
        first = cache.get_or_build(KEY, build, "model m")
        second = cache.get_or_build(KEY, build, "model m")
    assert first == second == tmp_path / KEY.directory_name() / "model.onnx"
    assert build.calls == 1 and first.read_bytes() == b"graph-1"
    messages = [r.getMessage() for r in caplog.records]
    assert any("exporting to onnx (first load" in m for m in messages)
    assert any("using the cached onnx export" in m for m in messages)
    manifest = json.loads((first.parent / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "weights.bin"} and manifest["key"] == KEY.fields()
    assert [p.name for p in tmp_path.iterdir()] == [KEY.directory_name()]  # no temporary directory left


@pytest.mark.parametrize(
    "damage",
    ["flip a byte", "truncate", "drop the manifest", "drop a file", "add a file", "manifest of another key"],
)
def test_damaged_entry_is_rebuilt(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    cache, build = ExportCache(tmp_path), Builder()
    path = cache.get_or_build(KEY, build, "model m")
    entry = path.parent
    if damage == "flip a byte":
        data = bytearray((entry / "weights.bin").read_bytes())
        data[500] ^= 0xFF
        (entry / "weights.bin").write_bytes(bytes(data))
    elif damage == "truncate":
        (entry / "model.onnx").write_bytes(b"gra")
    elif damage == "drop the manifest":  # an entry left half-written by a crash before sealing
        (entry / "manifest.json").unlink()
    elif damage == "drop a file":
        (entry / "weights.bin").unlink()
    elif damage == "add a file":
        (entry / "stray.tmp").write_bytes(b"x")
    else:
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest["key"]["quantize"] = "int8"
        (entry / "manifest.json").write_text(json.dumps(manifest))
    assert cache.check(KEY) is not None
    with caplog.at_level(logging.WARNING, logger="embedserve.engines.export"):
        again = cache.get_or_build(KEY, build, "model m")
    assert build.calls == 2 and again.read_bytes() == b"graph-2"
    assert cache.check(KEY) is None
    assert any("is damaged" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert [p.name for p in tmp_path.iterdir()] == [KEY.directory_name()]


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken(dest: Path) -> None:
        (dest / "model.onnx").write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    cache = ExportCache(tmp_path)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        cache.get_or_build(KEY, broken, "model m")
    assert list(tmp_path.iterdir()) == []
    assert cache.check(KEY) == "missing"

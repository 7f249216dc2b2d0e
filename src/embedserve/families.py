"""Model families and the engines each one runs on: the support matrix, in one table.

A *family* is what decides how a model can be run: its architecture (``config.json``
``model_type``) and the sentence-transformers modules around it (a static embedding, a
``Router`` with an inference-free side). :data:`FAMILIES` says, for each family and catalogue
type, which engines (backend and quantization) serve it exactly as its library does; the
integration tests (``tests/integration/test_families.py``) check every cell of it against the
library on tiny random models, and ``docs/families.md`` is generated from it
(:func:`markdown_table`; ``python -m embedserve.families`` rewrites the page).

:func:`detect` reads the family from a model directory without loading anything. A model whose
family does not allow the catalogue's engine fails to load with one line naming the model, the
engine and what to use instead (:func:`check_engine`): never wrong numbers. Architectures not in
the table are not refused (any model sentence-transformers loads may work); they are shown as
``other (<model_type>)``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedserve.catalog import CatalogEntry, ModelSpec

TORCH, ONNX, ONNX_INT8, OPENVINO, OPENVINO_INT8 = "torch", "onnx", "onnx-int8", "openvino", "openvino-int8"
ENGINES: tuple[str, ...] = (TORCH, ONNX, ONNX_INT8, OPENVINO, OPENVINO_INT8)
EXPORTED = ENGINES[1:]
TYPES = {"embeddings": "dense", "sparse-embeddings": "sparse", "rerank": "rerank"}


@dataclass(frozen=True)
class Family:
    """One row of the matrix: a family of models of one catalogue type and the engines it runs on."""

    key: str  # architecture key (see detect): bert, xlm-roberta, ..., static, inference-free-splade
    type: str  # catalogue type: embeddings | sparse-embeddings | rerank
    label: str  # shown in listings and the docs
    engines: tuple[str, ...]
    examples: str = ""  # models of this family users serve
    why_not: str = ""  # why the other engines are not offered
    tested: bool = True  # False: an architecture outside the table, run as it comes

    @property
    def name(self) -> str:
        """``<kind>/<key>``, e.g. ``dense/qwen3``: what listings show."""
        return f"{TYPES[self.type]}/{self.key}"


_ALL = ENGINES
FAMILIES: tuple[Family, ...] = (
    Family("bert", "embeddings", "BERT (CLS or mean pooling)", _ALL, "all-MiniLM-L6-v2, bge-small-en-v1.5, e5"),
    Family("xlm-roberta", "embeddings", "XLM-RoBERTa", _ALL, "multilingual-e5, bge-m3 (dense)"),
    Family("distilbert", "embeddings", "DistilBERT", _ALL, "msmarco-distilbert, multi-qa-distilbert"),
    Family("modernbert", "embeddings", "ModernBERT", _ALL, "gte-modernbert-base"),
    Family(
        "qwen3",
        "embeddings",
        "Qwen3 decoder (last-token pooling, left padding, instruction prompt)",
        _ALL,
        "Qwen3-Embedding-0.6B/4B/8B",
    ),
    Family(
        "gemma3",
        "embeddings",
        "Gemma3 text (EmbeddingGemma)",
        (TORCH,),
        "embeddinggemma-300m",
        "its attention masks do not trace to ONNX (torch.onnx's TorchScript exporter fails on them)",
    ),
    Family(
        "static",
        "embeddings",
        "static embeddings (sentence-transformers StaticEmbedding, model2vec)",
        (TORCH,),
        "potion-base-8M, static-retrieval-mrl-en-v1",
        "a lookup and a mean: no network to export, and it is faster than any forward pass",
    ),
    Family("bert", "sparse-embeddings", "BERT SPLADE", _ALL, "splade-v3, SPLADE-tiny"),
    Family("distilbert", "sparse-embeddings", "DistilBERT SPLADE", _ALL, "splade-v3-distilbert, splade_v2_distil"),
    Family(
        "inference-free-splade",
        "sparse-embeddings",
        "inference-free SPLADE (Router: SPLADE on one side, static token weights on the other)",
        (TORCH,),
        "opensearch-neural-sparse-encoding-doc-v3-distill",
        "the export holds one pipeline; a Router has two",
    ),
    Family("bert", "rerank", "BERT cross-encoder", _ALL, "ms-marco-MiniLM-L6-v2, bge-reranker-base"),
    Family("xlm-roberta", "rerank", "XLM-RoBERTa cross-encoder", _ALL, "bge-reranker-v2-m3"),
    Family("modernbert", "rerank", "ModernBERT cross-encoder", _ALL, "gte-reranker-modernbert-base"),
)

# config.json model_type -> family key (several model types share a family)
MODEL_TYPES = {
    "bert": "bert",
    "xlm-roberta": "xlm-roberta",
    "distilbert": "distilbert",
    "modernbert": "modernbert",
    "qwen3": "qwen3",
    "gemma3_text": "gemma3",
    "gemma3": "gemma3",
}


def lookup(key: str, model_type: str) -> Family:
    """The matrix row of ``key`` for catalogue type ``model_type``; an untested row (every engine
    allowed) for anything else."""
    for family in FAMILIES:
        if family.key == key and family.type == model_type:
            return family
    return Family(key, model_type, key, ENGINES, tested=False)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _module_types(directory: Path) -> list[tuple[str, Path]]:
    """(class name, directory) of each sentence-transformers module, a Router's sub-modules included."""
    modules = _json(directory / "modules.json")
    if not isinstance(modules, list):
        return []
    out = []
    for module in modules:
        if not isinstance(module, dict):
            continue
        name = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = directory / str(module.get("path", ""))
        if name == "Router":
            router = _json(path / "router_config.json") or {}
            for sub, full in (router.get("types") or {}).items():
                out.append((str(full).rsplit(".", 1)[-1], path / sub))
        else:
            out.append((name, path))
    return out


def architecture(directory: Path) -> str:
    """The family key of the model in ``directory``: from its sentence-transformers modules, else
    its ``config.json`` ``model_type``; ``model2vec`` files are static; ``unknown`` when neither."""
    modules = _module_types(directory)
    names = {name for name, _ in modules}
    if "SparseStaticEmbedding" in names:
        return "inference-free-splade"
    if "StaticEmbedding" in names:
        return "static"
    configs = [path / "config.json" for name, path in modules if name in ("Transformer", "MLMTransformer")]
    for config_path in [*configs, directory / "config.json"]:
        config = _json(config_path)
        if not isinstance(config, dict):
            continue
        model_type = config.get("model_type")
        if isinstance(model_type, str):
            return MODEL_TYPES.get(model_type, model_type)
        if config_path == directory / "config.json" and is_model2vec(directory):
            return "static"
    return "unknown"


def is_model2vec(directory: Path) -> bool:
    """A model in model2vec's format: a ``config.json`` without a ``model_type`` and a
    ``model.safetensors`` holding model2vec's ``embeddings`` tensor (sentence-transformers' own
    StaticEmbedding saves ``embedding.weight``). model2vec also writes a ``modules.json`` so that
    sentence-transformers loads it; its own library's output is the reference for it."""
    config = _json(directory / "config.json")
    if not isinstance(config, dict) or "model_type" in config:
        return False
    return "embeddings" in _safetensors_names(directory / "model.safetensors")


def _safetensors_names(path: Path) -> set[str]:
    """The tensor names in a safetensors file's header (8-byte length, then JSON), read without
    loading the tensors."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 1 << 26:
                return set()
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return set()
    return set(header) - {"__metadata__"} if isinstance(header, dict) else set()


def engine_of(entry: CatalogEntry) -> str:
    """The entry's engine in the matrix's terms: backend, with ``-int8`` when quantized."""
    spec = entry.spec
    return spec.backend + ("-int8" if spec.quantize == "int8" else "")


def detect(entry: CatalogEntry) -> Family | None:
    """The family of a catalogue entry's model; None when its files are not on this machine or
    it is not a model of its own (the ``similarity`` reranker runs a dense model: its family is
    the dense one)."""
    directory = local_directory(entry)
    return None if directory is None else for_directory(directory, entry.spec)


def for_directory(directory: Path, spec: ModelSpec) -> Family:
    """The family of the model in ``directory`` served as ``spec`` says (its type and engine)."""
    model_type = "embeddings" if spec.engine_name == "similarity" else spec.type
    return lookup(architecture(directory), model_type)


def local_directory(entry: CatalogEntry) -> Path | None:
    """The model's directory on this machine (a hub model: its cached snapshot), else None."""
    if entry.source.kind != "hub":
        return Path(entry.source.location)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(entry.source.location, revision=entry.spec.revision, local_files_only=True))
    except Exception:  # not in the local cache (or no hub client): unknown until it is downloaded
        return None


def check_engine(entry: CatalogEntry, family: Family) -> None:
    """Raise ``ValueError`` (one line: model, engine, what to use instead) when ``family`` does not
    run on the entry's engine."""
    engine = engine_of(entry)
    if engine in family.engines:
        return
    instead = ", ".join(e.replace("-", " + quantize ") for e in family.engines)
    why = f" ({family.why_not})" if family.why_not else ""
    raise ValueError(
        f"model {entry.id}: {family.label} cannot run on backend {engine.replace('-', ' + quantize ')}{why}; "
        f"use backend {instead}"
    )


# --- the docs table ----------------------------------------------------------------------------------------

DOC = Path("docs/families.md")
_HEADER = """# Model families and engines

Which model architectures embedserve serves, and on which engines (`backend` and `quantize` in
`models.yaml`). Every ticked cell is checked in the test suite against the model's own library
(sentence-transformers `SentenceTransformer.encode`, `SparseEncoder.encode`,
`CrossEncoder.predict`; model2vec for its own format) on a tiny random model of the family:
fp32 engines give the library's numbers (dense cosine at least 0.9999, sparse weights and rerank
scores within 1e-4), int8 engines stay within the quality gate's tolerance, and a batch gives
the same outputs as its inputs one by one.

A model whose family does not run on the catalogue's engine does not load: the model listing
shows it failed, with one line naming the model, the engine and the engines to use instead.
Architectures not listed here are not refused; they are shown as their `model_type` and are not
covered by these checks.

`embedserve models` and `GET /api/v1/models` show each model's family (as `kind/key`, e.g.
`dense/qwen3`) and engine. The family is read from the model directory: the
sentence-transformers modules (`modules.json`, a `Router`'s `router_config.json`), else
`config.json`'s `model_type`.

## How the families differ

- **Decoders (Qwen3)**: the tokenizer's `padding_side: left` is kept, so a padded batch pools the
  last token of every row as the library does; the instruction prompt comes from the model's
  `config_sentence_transformers.json` or the catalogue's `prompts` (a request names it with
  `prompt_name`, e.g. `query`). The exported engines run each input alone, so they never pad.
- **Static embeddings**: no network, only a lookup and a mean, on torch. A directory in
  model2vec's format (a `config.json` without `model_type` and model2vec's `embeddings` tensor) is
  served as `model2vec.StaticModel.encode` computes it: unknown tokens dropped, cut at the
  config's `max_length` (512 when unset), normalized when its config says so. A
  sentence-transformers `StaticEmbedding` model is served as `SentenceTransformer.encode`
  computes it (every token, no cut).
- **Inference-free SPLADE** (a sentence-transformers `Router` with a `SparseStaticEmbedding`
  side): each side runs its own pipeline, as `SparseEncoder.encode_query` and `encode_document`
  do. A request picks the side with `prompt_name` (`query`, `document`, or any route the model
  names), without the model defining a prompt of that name; with none, the router's default route
  is used (what plain `encode` does).

<!-- generated by `python -m embedserve.families` from embedserve/families.py: do not edit -->
"""


def markdown_table() -> str:
    """The support matrix as a Markdown table (the body of ``docs/families.md``)."""
    head = ["family", "type", *ENGINES, "for example"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in FAMILIES:
        cells = ["yes" if e in f.engines else "no" for e in ENGINES]
        lines.append(f"| {f.label} (`{f.name}`) | {f.type} | " + " | ".join(cells) + f" | {f.examples} |")
    notes = [f"- `{f.name}`: torch only: {f.why_not}." for f in FAMILIES if f.why_not]
    return "\n".join(lines) + "\n\nWhy some engines are not offered:\n\n" + "\n".join(notes) + "\n"


def document() -> str:
    """The whole generated ``docs/families.md``."""
    return _HEADER + "\n" + markdown_table()


def main(argv: list[str]) -> int:
    """Write ``docs/families.md`` (``--check``: only say whether it is up to date)."""
    path = Path(argv[argv.index("--out") + 1]) if "--out" in argv else DOC
    if "--check" in argv:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != document():
            print(f"{path} is out of date: run python -m embedserve.families", file=sys.stderr)
            return 1
        return 0
    path.write_text(document(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

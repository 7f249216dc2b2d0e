"""A model's own settings merged with its catalogue entry: prompts, default prompt, similarity
function, default output dimensions and token limit.

sentence-transformers reads ``config_sentence_transformers.json`` (``prompts``,
``default_prompt_name``, ``similarity_fn_name``, ``truncate_dim``) and the Transformer module's
``max_seq_length`` when it loads a model; the engine reports what it read as a
:class:`ModelConfig`. :func:`merge` lays the catalogue over it, as sentence-transformers lays
the ``prompts`` and ``default_prompt_name`` given to its constructor over the saved ones:

- ``prompts``: the model's, then the catalogue's (a name in both takes the catalogue's text);
- the default prompt: the catalogue's ``default_prompt`` when the entry sets it (``null``
  written out turns the model's default off), else the model's ``default_prompt_name``;
- the default output dimensions: the catalogue's ``dimensions``, else the model's ``truncate_dim``;
- the similarity function: the model's ``similarity_fn_name``, else the library's default.

Dialects that name a purpose rather than a prompt (Jina's ``task``, Cohere's ``input_type``)
pick a prompt with :meth:`ModelSettings.prompt_name_for` from the names models use for that purpose
(:data:`PURPOSE_PROMPTS`). No torch here: the API layer and the registry import it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from embedserve.catalog import ModelSpec
from embedserve.errors import InvalidInput, clip

Origin = Literal["model", "catalogue"]
SIMILARITY_FUNCTIONS: tuple[str, ...] = ("cosine", "dot", "euclidean", "manhattan")

# What models name their prompts for each purpose, best first: the names in the
# config_sentence_transformers.json of Qwen3-Embedding, EmbeddingGemma (query/document and
# its task names), E5 and mxbai (query/passage), nomic-embed (search_query/search_document,
# classification, clustering), jina-embeddings-v3 (retrieval.query/retrieval.passage,
# text-matching, separation, classification) and stella (s2p_query/s2s_query).
PURPOSE_PROMPTS: dict[str, tuple[str, ...]] = {
    "query": ("query", "search_query", "retrieval.query", "Retrieval-query", "s2p_query"),
    "document": ("document", "passage", "search_document", "retrieval.passage", "Retrieval-document", "corpus"),
    "classification": ("classification", "Classification"),
    "clustering": ("clustering", "Clustering", "separation"),
    "similarity": ("text-matching", "STS", "s2s_query"),
}


def purpose(*names: str, of: str | None = None) -> tuple[str, ...]:
    """Candidate prompt names: ``names`` (a dialect's own value first), then those of purpose ``of``."""
    return tuple(dict.fromkeys((*names, *PURPOSE_PROMPTS.get(of or "", ()))))


@dataclass(frozen=True)
class ModelConfig:
    """What the model's own files say, as sentence-transformers read them when it loaded the model."""

    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    truncate_dim: int | None = None
    max_seq_length: int | None = None


def read_model_config(directory: Path, spec: ModelSpec) -> ModelConfig:
    """What sentence-transformers reads from a model directory, without loading the model (for
    ``embedserve models``; a loaded engine reports what the library itself read). Dense and
    sparse models get the library's empty ``query`` and ``document`` prompts unless their files
    set them; cross-encoders have no such defaults."""
    saved = _json(directory / "config_sentence_transformers.json")
    module = _json(directory / "sentence_bert_config.json")
    cross = spec.type == "rerank" and spec.engine_name == "cross-encoder"
    prompts = {} if cross else {"query": "", "document": ""}
    prompts.update({str(k): str(v) for k, v in (saved.get("prompts") or {}).items()})
    similarity = saved.get("similarity_fn_name") or (
        None if cross else "dot" if spec.type == "sparse-embeddings" else "cosine"
    )
    truncate_dim = saved.get("truncate_dim")
    # an older module config's max_seq_length, else the tokenizer's model_max_length (what the library reads)
    max_seq_length = module.get("max_seq_length") or _json(directory / "tokenizer_config.json").get("model_max_length")
    if isinstance(max_seq_length, int) and max_seq_length >= 10**9:  # transformers' "no limit"
        max_seq_length = None
    return ModelConfig(
        prompts=prompts,
        default_prompt_name=saved.get("default_prompt_name"),
        similarity_fn_name=similarity,
        truncate_dim=int(truncate_dim) if isinstance(truncate_dim, int) else None,
        max_seq_length=int(max_seq_length) if isinstance(max_seq_length, int) else None,
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Prompt:
    text: str
    origin: Origin


@dataclass(frozen=True)
class ModelSettings:
    """The settings a model is served with; ``known`` is false until the model's own were read
    (before its first load only the catalogue's are)."""

    prompts: dict[str, Prompt]
    default_prompt: str | None
    default_prompt_origin: Origin | None
    similarity: str | None
    dimensions: int | None  # default output dimensions; None: all of them
    dimensions_origin: Origin | None
    known: bool

    def resolve(self, prompt: str | None, prompt_name: str | None, param: str = "options.prompt_name") -> str | None:
        """A literal prompt, a named one, or the default prompt (``None``: no prompt)."""
        if prompt is not None and prompt_name is not None:
            raise InvalidInput("give options.prompt or options.prompt_name, not both", param=param)
        if prompt is not None:
            return prompt
        if prompt_name is not None:
            found = self.prompts.get(prompt_name)
            if found is None:
                names = ", ".join(sorted(self.prompts)) or "(this model defines none)"
                raise InvalidInput(f"unknown prompt_name '{clip(prompt_name)}'; prompts: {names}", param=param)
            return found.text
        return self.prompts[self.default_prompt].text if self.default_prompt in self.prompts else None

    def prompt_name_for(self, names: Sequence[str]) -> str | None:
        """The prompt for a purpose: the first of ``names`` with a non-empty prompt, else the first
        defined at all (an empty prompt: the model reads the text as it is), else ``None`` (the
        default prompt applies)."""
        defined = [name for name in names if name in self.prompts]
        return next((name for name in defined if self.prompts[name].text), defined[0] if defined else None)

    def describe(self) -> dict[str, object]:
        """The listing's view: every prompt with its text and where it came from."""
        return {name: {"text": p.text, "origin": p.origin} for name, p in sorted(self.prompts.items())}


def merge(spec: ModelSpec, own: ModelConfig | None, width: int | None = None) -> ModelSettings:
    """The catalogue entry over the model's own settings (``None``: not read yet). ``width``: the
    model's full output dimension, which the default dimensions may not exceed. Raises
    ``ValueError`` naming the field when the catalogue's default prompt or dimensions cannot
    apply to this model; only once the model's own settings are known."""
    mine = own or ModelConfig()
    prompts = {name: Prompt(text, "model") for name, text in mine.prompts.items()}
    prompts.update({name: Prompt(text, "catalogue") for name, text in spec.prompts.items()})

    default: str | None
    default_origin: Origin | None
    if "default_prompt" in spec.model_fields_set:
        default, default_origin = spec.default_prompt, "catalogue"
    else:
        default, default_origin = mine.default_prompt_name, "model"
    if default is None:
        default_origin = None
    elif default not in prompts and own is not None:
        names = ", ".join(sorted(prompts)) or "(none)"
        where = "default_prompt" if default_origin == "catalogue" else "the model's default_prompt_name"
        raise ValueError(f"{where} '{default}' names no prompt of this model; prompts: {names}")

    dimensions, dims_origin = _dimensions(spec, mine, width, own is not None)
    similarity = mine.similarity_fn_name if mine.similarity_fn_name in SIMILARITY_FUNCTIONS else None
    return ModelSettings(prompts, default, default_origin, similarity, dimensions, dims_origin, own is not None)


def _dimensions(spec: ModelSpec, own: ModelConfig, width: int | None, known: bool) -> tuple[int | None, Origin | None]:
    if spec.dimensions is not None:
        if known and width and spec.dimensions > width:
            raise ValueError(f"dimensions {spec.dimensions} exceeds the model's {width} output dimensions")
        return spec.dimensions, "catalogue"
    if own.truncate_dim is not None:
        # sentence-transformers slices to truncate_dim: one above the width keeps them all
        return (min(own.truncate_dim, width) if width else own.truncate_dim), "model"
    return None, None


def similarity_scores(
    function: str, query: npt.NDArray[np.generic], others: npt.NDArray[np.generic]
) -> npt.NDArray[np.float32]:
    """``function`` (a ``similarity_fn_name``) of one vector with each row of ``others``, as
    sentence-transformers' ``similarity`` computes it: cosine, dot product, or the negative
    euclidean or manhattan distance (higher is more similar for all four)."""
    a = np.asarray(query, dtype=np.float32)
    b = np.asarray(others, dtype=np.float32)
    if function == "cosine":
        a = a / max(float(np.linalg.norm(a)), 1e-12)  # torch.nn.functional.normalize's eps
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return np.asarray(b @ a, dtype=np.float32)
    if function == "dot":
        return np.asarray(b @ a, dtype=np.float32)
    if function == "euclidean":
        return np.asarray(-np.linalg.norm(b - a, axis=1), dtype=np.float32)
    if function == "manhattan":
        return np.asarray(-np.abs(b - a).sum(axis=1), dtype=np.float32)
    raise ValueError(f"unknown similarity function '{function}'; known: {', '.join(SIMILARITY_FUNCTIONS)}")

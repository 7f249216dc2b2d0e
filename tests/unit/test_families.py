"""The support matrix's table (embedserve.families): the docs page is generated from it, and a
family's refusal is one line naming the model, the engine and what to use instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.server import ROOT

from embedserve import families
from embedserve.catalog import parse_catalog


def test_the_committed_docs_table_is_the_generated_one() -> None:
    committed = (ROOT / families.DOC).read_text(encoding="utf-8")
    assert committed == families.document(), "docs/families.md is out of date: run python -m embedserve.families"


def test_the_generator_writes_and_checks_the_page(tmp_path: Path) -> None:
    out = tmp_path / "families.md"
    assert families.main(["--check", "--out", str(out)]) == 1
    assert families.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == families.document()
    assert families.main(["--check", "--out", str(out)]) == 0


def test_every_row_names_known_engines_and_torch() -> None:
    keys = [(f.key, f.type) for f in families.FAMILIES]
    assert len(keys) == len(set(keys))
    for family in families.FAMILIES:
        assert families.TORCH in family.engines and set(family.engines) <= set(families.ENGINES)
        assert (family.why_not != "") == (family.engines != families.ENGINES), family.name


def test_a_refusal_is_one_line_with_the_model_the_engine_and_the_way_out(tmp_path: Path) -> None:
    entry = parse_catalog(
        {"models": {"gemma": {"name": str(tmp_path), "type": "embeddings", "backend": "openvino", "quantize": "int8"}}},
        ROOT,
    ).entries["gemma"]
    with pytest.raises(ValueError) as refused:
        families.check_engine(entry, families.lookup("gemma3", "embeddings"))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        "model gemma: Gemma3 text (EmbeddingGemma) cannot run on backend openvino + quantize int8"
    )
    assert message.endswith("; use backend torch")


def test_the_similarity_reranker_has_its_dense_models_family(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    entry = parse_catalog(
        {"models": {"r": {"name": str(tmp_path), "type": "rerank", "engine": "similarity"}}}, ROOT
    ).entries["r"]
    family = families.detect(entry)
    assert family is not None and family.name == "dense/bert"


def test_a_model_without_local_files_has_no_family() -> None:
    entry = parse_catalog({"models": {"h": {"name": "org/not-downloaded", "type": "embeddings"}}}, ROOT).entries["h"]
    assert families.detect(entry) is None

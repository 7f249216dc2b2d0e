"""The merge of a model's own settings with its catalogue entry, and prompt resolution on it."""

from __future__ import annotations

import pytest

from embedserve.catalog import ModelSpec
from embedserve.errors import InvalidInput
from embedserve.model_settings import ModelConfig, Prompt, merge, purpose

QWEN3 = ModelConfig(  # Qwen3-Embedding's config_sentence_transformers.json, as sentence-transformers reads it
    prompts={"query": "Instruct: Given a web search query, retrieve relevant passages\nQuery:", "document": ""},
    similarity_fn_name="cosine",
    max_seq_length=8192,
)
E5 = ModelConfig(prompts={"query": "query: ", "document": "", "passage": "passage: "}, similarity_fn_name="cosine")


def _spec(**fields: object) -> ModelSpec:
    return ModelSpec.model_validate({"name": "x/y", "type": "embeddings", **fields})


def test_catalogue_prompts_add_to_and_override_the_models() -> None:
    settings = merge(_spec(prompts={"query": "q: ", "code": "code: "}), QWEN3)
    assert settings.prompts == {
        "query": Prompt("q: ", "catalogue"),
        "document": Prompt("", "model"),
        "code": Prompt("code: ", "catalogue"),
    }
    assert settings.describe()["document"] == {"text": "", "origin": "model"}
    assert settings.known and settings.similarity == "cosine"


def test_default_prompt_from_the_model_unless_the_catalogue_sets_one() -> None:
    own = ModelConfig(prompts={"query": "q: ", "document": "d: "}, default_prompt_name="query")
    model = merge(_spec(), own)
    assert (model.default_prompt, model.default_prompt_origin) == ("query", "model")
    assert model.resolve(None, None) == "q: "
    catalogue = merge(_spec(default_prompt="document"), own)
    assert (catalogue.default_prompt, catalogue.default_prompt_origin) == ("document", "catalogue")
    assert catalogue.resolve(None, None) == "d: "
    off = merge(_spec(default_prompt=None), own)  # null written out: no default prompt
    assert off.default_prompt is None and off.resolve(None, None) is None


def test_a_default_prompt_naming_no_prompt_fails_once_the_model_is_known() -> None:
    spec = _spec(default_prompt="passage")
    assert merge(spec, None).default_prompt == "passage"  # not loaded yet: the model may define it
    assert merge(spec, E5).resolve(None, None) == "passage: "
    with pytest.raises(ValueError, match="default_prompt 'passage' names no prompt of this model; prompts: document"):
        merge(spec, QWEN3)
    with pytest.raises(ValueError, match="the model's default_prompt_name 'x'"):
        merge(_spec(), ModelConfig(default_prompt_name="x"))


def test_resolve_names_literal_and_unknown() -> None:
    settings = merge(_spec(prompts={"code": "c: "}), E5)
    assert settings.resolve(None, "passage") == "passage: "
    assert settings.resolve(None, "code") == "c: "
    assert settings.resolve("raw: ", None) == "raw: "
    assert settings.resolve(None, None) is None
    unknown = "unknown prompt_name 'nope'; prompts: code, document, passage, query"
    with pytest.raises(InvalidInput, match=unknown) as err:
        settings.resolve(None, "nope")
    assert err.value.param == "options.prompt_name"
    with pytest.raises(InvalidInput, match="not both"):
        settings.resolve("a", "query")
    with pytest.raises(InvalidInput, match=r"\(this model defines none\)"):
        merge(_spec(), ModelConfig()).resolve(None, "query")


def test_a_purpose_prefers_a_non_empty_prompt() -> None:
    document = purpose("search_document", of="document")
    assert merge(_spec(), E5).prompt_name_for(document) == "passage"  # "document" is empty, "passage" is not
    assert merge(_spec(), QWEN3).prompt_name_for(document) == "document"  # empty on purpose: no instruction
    nomic = ModelConfig(prompts={"search_query": "search_query: ", "search_document": "search_document: "})
    assert merge(_spec(), nomic).prompt_name_for(purpose("retrieval.query", of="query")) == "search_query"
    gemma = ModelConfig(prompts={"query": "task: search result | query: ", "Clustering": "task: clustering | query: "})
    assert merge(_spec(), gemma).prompt_name_for(purpose("clustering", of="clustering")) == "Clustering"
    assert merge(_spec(), gemma).prompt_name_for(purpose("classification", of="classification")) is None


def test_dimensions_from_the_catalogue_else_truncate_dim() -> None:
    matryoshka = ModelConfig(truncate_dim=256)
    assert (merge(_spec(), matryoshka, 768).dimensions, merge(_spec(), matryoshka).dimensions_origin) == (256, "model")
    assert merge(_spec(dimensions=128), matryoshka, 768).dimensions == 128
    assert merge(_spec(), ModelConfig(truncate_dim=1024), 768).dimensions == 768  # a slice past the end keeps all
    assert merge(_spec(), ModelConfig(), 768).dimensions is None
    with pytest.raises(ValueError, match="dimensions 1024 exceeds the model's 768 output dimensions"):
        merge(_spec(dimensions=1024), ModelConfig(), 768)


def test_unknown_similarity_names_are_left_to_the_default() -> None:
    assert merge(_spec(), ModelConfig(similarity_fn_name="dot")).similarity == "dot"
    assert merge(_spec(), ModelConfig(similarity_fn_name="maxsim")).similarity is None
    assert merge(_spec(), None).similarity is None and not merge(_spec(), None).known

"""A model's handle: its served settings, merged once for each engine and the engine's own settings."""

from __future__ import annotations

import gc
import weakref

from helpers.server import ROOT
from helpers.tiny_models import fake_catalog_data

from embedserve.catalog import parse_catalog
from embedserve.engines import create_engine
from embedserve.gate import DeviceGate
from embedserve.model_settings import ModelConfig
from embedserve.registry import LocalModelHandle
from embedserve.tokenizer_pool import TokenizerPool


def test_settings_are_merged_again_only_when_the_engine_or_its_own_settings_change() -> None:
    entry = parse_catalog(fake_catalog_data(), ROOT).entries["tiny-dense"]
    pool = TokenizerPool(threads=1)
    try:
        handle = LocalModelHandle(entry, create_engine, pool, lambda device: DeviceGate(1))
        before = handle.settings()  # not loaded: the catalogue's alone
        assert not before.known and handle.settings() is before
        engine = create_engine(entry)
        engine.own_settings = ModelConfig(similarity_fn_name="cosine")  # as a loaded model's files say
        handle.engine = engine
        loaded = handle.settings()
        assert loaded.known and loaded.similarity == "cosine"
        assert handle.settings() is loaded and handle.settings(engine) is loaded
        engine.own_settings = ModelConfig(prompts={"code": "code: "})  # read again (a reload of its files)
        mine = handle.settings()
        assert mine is not loaded and mine.prompts["code"].text == "code: " and handle.settings() is mine
        other = create_engine(entry)
        assert "code" not in handle.settings(other).prompts

        gone = weakref.ref(engine)
        handle.engine = None
        del engine, other
        gc.collect()
        assert gone() is None  # the merged settings do not keep an unloaded engine alive
        assert not handle.settings().known
    finally:
        pool.close()

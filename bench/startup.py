"""Start-up time and memory of the default catalogue, as a user sees them.

Runs ``make run`` (with EMBEDSERVE_PORT set to a free loopback port), measures the seconds until
``/health`` reports every preloaded model ready, then the resident memory (RSS and USS) of the
server process, once idle and once after a warm-up of the three endpoints. Stops everything it
started.

    python bench/startup.py [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from common import write_json  # noqa: E402
from helpers.server import free_port  # noqa: E402

MiB = 1024 * 1024


def _server_process(make: psutil.Process) -> psutil.Process:
    for child in make.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "embedserve" in " ".join(child.cmdline()) and "serve" in child.cmdline():
                return child
    raise RuntimeError("no embedserve process under make run")


def _memory(process: psutil.Process) -> dict[str, float]:
    info = process.memory_full_info()
    return {"rss_mib": round(info.rss / MiB, 1), "uss_mib": round(info.uss / MiB, 1)}


def _warm_up(url: str) -> None:
    texts = ["What causes heart attacks?", "A man is playing a guitar."] * 16
    httpx.post(f"{url}/api/v1/embeddings", json={"input": texts}, timeout=60).raise_for_status()
    httpx.post(f"{url}/api/v1/embed_sparse", json={"input": texts}, timeout=60).raise_for_status()
    httpx.post(f"{url}/api/v1/rerank", json={"query": texts[0], "documents": texts}, timeout=60).raise_for_status()


def measure(timeout: float = 600) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "EMBEDSERVE_PORT": str(port), "EMBEDSERVE_HOST": "127.0.0.1"}
    url = f"http://127.0.0.1:{port}"
    installed = (ROOT / ".venv" / ".installed").exists()
    started = time.perf_counter()
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            if make.poll() is not None:
                raise RuntimeError(f"make run exited with {make.returncode}")
            if time.perf_counter() - started > timeout:
                raise TimeoutError("not ready in time")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).json()["startup_complete"]:
                    break
            time.sleep(0.1)
        ready = time.perf_counter() - started
        server = _server_process(psutil.Process(make.pid))
        idle = _memory(server)
        _warm_up(url)
        warm = _memory(server)
        models = httpx.get(f"{url}/api/v1/models").json()["models"]
        return {
            "venv_was_installed": installed,
            "seconds_to_ready": round(ready, 2),
            "idle": idle,
            "after_warm_up": warm,
            "load_seconds": {m["id"]: m["load_seconds"] for m in models},
        }
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    result = measure()
    how = "venv already installed" if result["venv_was_installed"] else "fresh: venv created and installed"
    print(f"make run → ready: {result['seconds_to_ready']:.1f} s ({how})")
    print(f"server memory idle:          RSS {result['idle']['rss_mib']} MiB, USS {result['idle']['uss_mib']} MiB")
    print(
        f"server memory after warm-up: RSS {result['after_warm_up']['rss_mib']} MiB, "
        f"USS {result['after_warm_up']['uss_mib']} MiB"
    )
    print("model load seconds:", result["load_seconds"])
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

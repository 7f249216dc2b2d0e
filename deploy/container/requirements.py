"""Print embedserve's requirements with the given extras, read from pyproject.toml (run in the image's build).

    python3 requirements.py pyproject.toml models > requirements.txt

Extras that name embedserve itself (``embedserve[onnx]``) are expanded. The output changes only
when these requirements do, so the layer that installs them stays cached when anything else in
pyproject.toml changes (another extra, the version, tool settings).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

import tomllib


def requirements(pyproject: str, extras: list[str]) -> Iterator[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    self_reference = re.compile(rf"^{re.escape(project['name'])}\[([^\]]+)\]$")
    seen: set[str] = set()

    def expand(reqs: list[str]) -> Iterator[str]:
        for req in reqs:
            match = self_reference.match(req.replace(" ", ""))
            if match is None:
                yield req
                continue
            for extra in match.group(1).split(","):
                if extra not in seen:
                    seen.add(extra)
                    yield from expand(optional[extra])

    yield from expand(list(project.get("dependencies", [])))
    yield from expand([f"{project['name']}[{extra}]" for extra in extras])


if __name__ == "__main__":
    print("\n".join(dict.fromkeys(requirements(sys.argv[1], sys.argv[2:]))))

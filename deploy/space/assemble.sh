#!/usr/bin/env bash
# Assemble a Hugging Face Docker Space from this repository into DIR (docs/deploy.md):
#   deploy/space/assemble.sh /path/to/space && cd /path/to/space && git add -A && git commit -m embedserve && git push
# DIR is usually a clone of the Space (git clone https://huggingface.co/spaces/<user>/<space>).
# The Space builds the repository's Dockerfile; its README carries the Space's settings
# (sdk: docker, app_port: 7860).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
dest=$1
mkdir -p "$dest"
rm -rf "$dest/src" "$dest/deploy"
mkdir -p "$dest/deploy"
cp "$root/Dockerfile" "$root/.dockerignore" "$root/pyproject.toml" "$root/models.yaml" "$dest/"
cp -r "$root/src" "$dest/src"
cp -r "$root/deploy/container" "$dest/deploy/container"
cp "$root/deploy/space/README.md" "$dest/README.md"
find "$dest/src" \( -name __pycache__ -o -name "*.egg-info" \) -prune -exec rm -rf {} +
echo "assembled a Docker Space in $dest"

#!/usr/bin/env bash
# What the container tests (tests/container) need on a Debian machine with no image registry:
# podman from Debian's packages and a local debian:bookworm-slim made with debootstrap.
# Idempotent: installs only what is missing. Run as root, or with sudo available.
set -euo pipefail

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm-slim}

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    packages=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs)
    install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"; }
    # apt-get update only when the install fails without it (no package lists yet)
    install || { $SUDO apt-get update -q && install; }
fi

# Sandboxes that refuse setrlimit from containers: no default ulimits.
if [ ! -e /etc/containers/containers.conf ]; then
    $SUDO mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n' | $SUDO tee /etc/containers/containers.conf >/dev/null
fi

# A local stand-in for the public debian:bookworm-slim (same suite, minimal variant): `FROM
# debian:bookworm-slim` resolves to it, and nothing is pulled from a registry.
if ! podman image exists "$BASE_IMAGE"; then
    rootfs=$(mktemp -d)
    trap '$SUDO rm -rf "$rootfs"' EXIT
    $SUDO debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
    # apt lists and docs are not part of the slim image
    $SUDO rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
    $SUDO tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
    echo "built $BASE_IMAGE with debootstrap"
fi

#!/bin/sh
# The image's entrypoint: `embedserve-entrypoint serve` (the default), `... models`, `... export MODEL`.
#
# The exports built into the image (/opt/embedserve/exports, read-only) are linked into the writable
# export cache (EMBEDSERVE_CACHE_DIR, /data/exports), where the exports of other models go, so the
# server finds both in one place. Then it execs embedserve: the server is the container's main
# process and receives SIGTERM itself.
set -eu
builtin=/opt/embedserve/exports
cache=${EMBEDSERVE_CACHE_DIR:-/data/exports}

if [ -d "$builtin" ] && [ "$cache" != "$builtin" ]; then
    if mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; then
        # links an older image left behind point nowhere now
        find "$cache" -maxdepth 1 -xtype l -delete
        for entry in "$builtin"/*/; do
            [ -d "$entry" ] || continue
            name=$(basename "$entry")
            [ -e "$cache/$name" ] || ln -s "${entry%/}" "$cache/$name"
        done
    else
        echo "embedserve-entrypoint: $cache is not writable; using the exports built into the image ($builtin)" >&2
        EMBEDSERVE_CACHE_DIR=$builtin
        export EMBEDSERVE_CACHE_DIR
    fi
fi
exec embedserve "$@"

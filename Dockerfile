# embedserve in a container: the server, the default catalogue and its engine exports built in.
#   docker build -t embedserve .
#   docker run --rm -p 7860:7860 -v embedserve-data:/data embedserve
# Build args, the CUDA variant, compose, Kubernetes and a Hugging Face Space: docs/deploy.md.
#
# At run time only /data (a volume: hub cache, exports of other models) and /tmp are written, so
# the container runs with a read-only root filesystem. The catalogue is /etc/embedserve/models.yaml
# (mount another one there, or point EMBEDSERVE_CONFIG at one).
#
# Stages, ordered so that a change of the code rebuilds only the small layers: `deps` (torch and the
# dependencies), `app` (embedserve and the exports, from the code), `venv` (deps without the build
# tools) and the image (Python, the venv, then the app's files on top).

# The CUDA variant: an NVIDIA base image (compose.cuda.yaml).
ARG BASE_IMAGE=debian:bookworm-slim

# --- deps: a virtual environment with torch and embedserve's dependencies -----------------------------
FROM ${BASE_IMAGE} AS deps
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# torch first, pinned and from PyTorch's own index, so that nothing later can swap in another build.
# The CUDA variant: https://download.pytorch.org/whl/cu129 (the CUDA release of the base image).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Optional: a CA bundle for pip behind a TLS-intercepting proxy and a folder of local wheels, both
# paths inside the build (mounted by the builder). Build args are not kept in the image.
ARG PIP_CERT
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION" \
    && /opt/venv/bin/pip install "setuptools>=77"
ENV PATH=/opt/venv/bin:$PATH

# The dependencies, from pyproject.toml alone (a stub package stands in for the code), so that this
# layer is rebuilt when they change, not on every change of the code. Versions: pyproject.toml.
WORKDIR /src
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN mkdir -p src/embedserve && touch README.md src/embedserve/__init__.py \
    && pip install --no-build-isolation ".[models]" \
    && pip uninstall -y embedserve \
    && rm -rf build src README.md

# --- app: embedserve itself and the exports of the catalogue -----------------------------------------
FROM deps AS app
COPY README.md ./
COPY src ./src
RUN pip install --no-build-isolation --no-deps .
# The catalogue baked in (the CUDA variant: deploy/container/models.cuda.yaml) and its onnx/openvino
# exports built now, so that a container never exports at start-up.
ARG CATALOGUE=models.yaml
COPY ${CATALOGUE} /etc/embedserve/models.yaml
# (The cache makes its entries private to their owner: the image's user must read them.)
RUN HF_HUB_OFFLINE=1 embedserve export --config /etc/embedserve/models.yaml --cache-dir /opt/embedserve/exports \
    && mkdir -p /opt/embedserve/exports \
    && chmod -R a+rX /opt/embedserve
# What this stage adds, as one tree to lay over the image's root.
RUN site=$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
    && mkdir -p "/layer$site" /layer/opt/venv/bin /layer/etc \
    && cp -a "$site"/embedserve "$site"/embedserve-*.dist-info "/layer$site/" \
    && cp -a /opt/venv/bin/embedserve /layer/opt/venv/bin/ \
    && cp -a /opt/embedserve /layer/opt/ \
    && cp -a /etc/embedserve /layer/etc/

# --- venv: the dependencies without what only building needs --------------------------------------------
# pip, the build backend, and torch's C++ headers, test programs and protobuf compiler.
FROM deps AS venv
RUN pip uninstall -y pip setuptools \
    && torch=$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/torch \
    && rm -rf "$torch"/include "$torch"/test "$torch"/bin/*Test "$torch"/bin/test_* "$torch"/bin/protoc*

# --- the image -------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && (getent passwd 1000 >/dev/null || useradd --uid 1000 --user-group --no-create-home --home-dir /data \
        --shell /usr/sbin/nologin embedserve) \
    && install -d -o 1000 -g 1000 /data

COPY --from=venv /opt/venv /opt/venv
COPY deploy/container/entrypoint.sh /usr/local/bin/embedserve-entrypoint
COPY --from=app /layer/ /

# Settings: docs/settings.md. Bound to all interfaces inside the container: set EMBEDSERVE_API_KEYS
# (or EMBEDSERVE_API_KEYS_FILE) before exposing it. The default catalogue needs no hub: offline.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/data \
    EMBEDSERVE_HOST=0.0.0.0 \
    EMBEDSERVE_PORT=7860 \
    EMBEDSERVE_CONFIG=/etc/embedserve/models.yaml \
    EMBEDSERVE_CACHE_DIR=/data/exports \
    HF_HOME=/data/huggingface \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 1000:1000
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('EMBEDSERVE_PORT', '7860'), timeout=4)"]
# Exec form, and the entrypoint execs the server: SIGTERM reaches it (graceful shutdown, exit 0).
ENTRYPOINT ["embedserve-entrypoint"]
CMD ["serve"]

"""Command line: ``embedserve serve [--ray] | ray-config | models | export | eval | --version``; the only argv reader.

Settings come from flags over ``EMBEDSERVE_*`` environment variables over defaults.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from embedserve import __version__
from embedserve.catalog import Catalog, ModelSpec, load_catalog, resolve_source
from embedserve.errors import CatalogError
from embedserve.model_settings import merge, read_model_config
from embedserve.settings import LogFormat, LogLevel, Settings

log = logging.getLogger("embedserve")


def _setting_help(name: str) -> str:
    """A flag's help from its setting (settings.py is the one source): description, variable, default."""
    field = Settings.model_fields[name]
    default = field.get_default(call_default_factory=True, validated_data={})
    shown = (
        "" if default in (None, []) else f"; default: {str(default).lower() if isinstance(default, bool) else default}"
    )
    variable = f"{Settings.model_config.get('env_prefix', '')}{name}".upper()
    return f"{field.description} ({variable}{shown})".replace("%", "%%")


def _environment_only(parser: argparse.ArgumentParser) -> str:
    """The epilog naming the settings this parser has no flag for (they are read from the environment)."""
    flagged = {action.dest for action in parser._actions}
    prefix = Settings.model_config.get("env_prefix", "")
    names = [f"{prefix}{name}".upper() for name in Settings.model_fields if name not in flagged]
    return f"Also read from the environment: {', '.join(names)} (docs: Settings)."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedserve",
        description="Serve dense embeddings, sparse embeddings and reranking for the models in models.yaml.",
        epilog="Each serve flag but --ray and --address sets a setting that an EMBEDSERVE_* environment variable "
        "also sets; flags win. API keys themselves: EMBEDSERVE_API_KEYS (comma-separated) or a keys file, never a "
        "flag (flags show in the process list).",
    )
    parser.add_argument("--version", action="version", version=f"embedserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the catalogue over HTTP")
    serve.add_argument("--config", type=Path, help=_setting_help("config"))
    serve.add_argument("--host", help=_setting_help("host"))
    serve.add_argument("--port", type=int, help=_setting_help("port"))
    serve.add_argument("--lazy", action="store_true", default=None, help=_setting_help("lazy"))
    serve.add_argument("--log-level", choices=typing.get_args(LogLevel), help=_setting_help("log_level"))
    serve.add_argument("--log-format", choices=typing.get_args(LogFormat), help=_setting_help("log_format"))
    serve.add_argument("--api-keys-file", type=Path, help=_setting_help("api_keys_file"))
    serve.add_argument("--cache-dir", type=Path, help=_setting_help("cache_dir"))
    serve.add_argument("--cors-origins", help=_setting_help("cors_origins"))
    serve.add_argument(
        "--playground", action=argparse.BooleanOptionalAction, default=None, help=_setting_help("playground")
    )

    serve.add_argument(
        "--ray",
        action="store_true",
        help="run on Ray Serve, one deployment per model (needs pip install 'embedserve[ray]'); "
        "a local cluster unless --address is given",
    )
    serve.add_argument("--address", help="with --ray: an existing Ray cluster (e.g. 10.0.0.1:6379, or auto)")
    serve.epilog = _environment_only(serve)

    ray_config = sub.add_parser(
        "ray-config",
        help="print a Ray Serve config (YAML) of the catalogue, for `serve deploy` on a Ray cluster",
        description="Print a Ray Serve config of the catalogue: one deployment per model with its ray: options, "
        "the HTTP app in front. Deploy it with `serve deploy FILE` on a running cluster.",
    )
    ray_config.add_argument("--config", type=Path, help=_setting_help("config"))
    ray_config.add_argument("--host", help="address the cluster's HTTP proxies bind (default: 127.0.0.1)")
    ray_config.add_argument("--port", type=int, help="their port (default: 7860)")

    models = sub.add_parser("models", help="list the catalogue and whether each model's source resolves")
    models.add_argument("--config", type=Path, help=_setting_help("config"))
    export = sub.add_parser(
        "export",
        help="export the onnx/openvino models of the catalogue into the cache ahead of serving",
        description="Build (or check and reuse) the cached ONNX / OpenVINO export of every catalogue model whose "
        "backend is onnx or openvino, as the server would on first load: for images and CI.",
    )
    export.add_argument("models", nargs="*", metavar="MODEL", help="model ids (default: every onnx/openvino model)")
    export.add_argument("--config", type=Path, help=_setting_help("config"))
    export.add_argument("--cache-dir", type=Path, help=_setting_help("cache_dir"))
    _eval_parser(sub)
    return parser


def _eval_parser(sub: Any) -> None:
    ev = sub.add_parser(
        "eval",
        help="retrieval quality of a running server on a BEIR dataset, stored in PostgreSQL + pgvector",
        description="Embed a BEIR dataset through a running server, store it in PostgreSQL + pgvector and score "
        "dense, sparse, hybrid (RRF) and hybrid + rerank retrieval (nDCG@10, MRR@10, Recall@100, latency). "
        "Needs pip install 'embedserve[eval]'.",
    )
    ev.add_argument("--dataset", type=Path, required=True, help="a BEIR dataset directory")
    ev.add_argument("--url", default="http://127.0.0.1:7860", help="the server (default: %(default)s)")
    ev.add_argument("--api-key", default=os.environ.get("EMBEDSERVE_API_KEY"), help="bearer token (EMBEDSERVE_API_KEY)")
    ev.add_argument("--dsn", help="PostgreSQL with pgvector to use (default: a throwaway embedded PostgreSQL)")
    ev.add_argument("--dense", help="dense model id (default: the catalogue's default embeddings model)")
    ev.add_argument("--sparse", help="sparse model id (default: the catalogue's default sparse model)")
    ev.add_argument("--rerank", help="rerank model id (default: the catalogue's default reranker)")
    ev.add_argument("--rrf-k", type=int, default=60, help="reciprocal rank fusion constant (default: %(default)s)")
    ev.add_argument("--candidates", type=int, default=100, help="top N of each search fused (default: %(default)s)")
    ev.add_argument("--rerank-top", type=int, default=20, help="hybrid results reranked (default: %(default)s)")
    ev.add_argument("--ef-search", type=int, default=200, help="hnsw.ef_search (default: %(default)s)")
    ev.add_argument("--split", default="test", help="qrels/<split>.tsv (default: %(default)s)")
    ev.add_argument("--batch-size", type=int, default=32, help="texts per embedding request (default: %(default)s)")
    ev.add_argument("--keep", action="store_true", help="with --dsn: keep the schema instead of dropping it")
    ev.add_argument("--out", type=Path, default=Path("eval-results"), help="JSON and PNG folder (default: %(default)s)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the flags given (argparse's ``dest`` is the field's name) over the environment."""
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**overrides)


def _fail(message: str) -> int:
    print(f"embedserve: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    if args.command == "eval":
        return _eval(args)
    try:
        settings = _settings(args)
        if args.command == "models":
            return _models(load_catalog(settings.config, check_sources=False))
        if args.command == "export":
            return _export(load_catalog(settings.config), args.models, settings)
        if args.command == "ray-config":
            return _ray_config(settings, load_catalog(settings.config, check_sources=False))
        if args.address is not None and not args.ray:
            return _fail("--address needs --ray")
        if args.ray:
            return _serve_ray(settings, load_catalog(settings.config), args.address)
        return _serve(settings, load_catalog(settings.config))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        if not field:  # a check across settings: its message names them
            return _fail(f"settings: {str(first['msg']).removeprefix('Value error, ')}")
        return _fail(f"setting {field} (EMBEDSERVE_{field.upper()}): {first['msg']}")
    except CatalogError as exc:
        return _fail(exc.message)


def _models(catalog: Catalog) -> int:
    base = catalog.path.parent if catalog.path else Path.cwd()
    from embedserve.families import for_directory

    rows = [("ID", "TYPE", "FAMILY", "ENGINE", "BACKEND", "REMOTE CODE", "SOURCE", "RESOLVES", "PROMPTS", "NAME")]
    for entry in catalog.entries.values():
        spec = entry.spec
        directory: Path | None = None
        try:
            source = entry.source if spec.is_fusion else resolve_source(spec.name, base)
            kind, status = source.describe(), "yes"
            if source.kind == "hub":
                directory = _hub_cached(source.location, spec.revision)
                status = "cached" if directory else "needs hub access"
            else:
                directory = Path(source.location)
        except ValueError as exc:
            kind, status = "-", f"no: {exc}"
        found = for_directory(directory, spec) if directory is not None else None
        rows.append(
            (
                entry.id,
                spec.type,
                found.name if found else "-",
                spec.engine_name,
                spec.backend + ("-int8" if spec.quantize == "int8" else ""),
                "yes" if spec.trust_remote_code else "no",
                kind,
                status,
                _prompts(spec, directory),
                spec.name,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _export(catalog: Catalog, wanted: list[str], settings: Settings) -> int:
    unknown = [m for m in wanted if m not in catalog.entries]
    if unknown:
        return _fail(f"unknown model(s): {', '.join(unknown)}; the catalogue has: {', '.join(catalog.ids())}")
    fused = [m for m in wanted if catalog.entries[m].spec.is_fusion]
    if fused:
        return _fail(
            f"model(s) {', '.join(fused)} (engine fusion) load no model of their own: export the models they fuse"
        )
    entries = [catalog.entries[m] for m in wanted] or [
        e for e in catalog.entries.values() if e.spec.backend != "torch" and not e.spec.is_fusion
    ]
    torch_only = [e.id for e in entries if e.spec.backend == "torch"]
    if torch_only:
        return _fail(f"model(s) {', '.join(torch_only)} use backend torch: nothing to export")
    if not entries:
        print("no model in the catalogue uses backend onnx or openvino: nothing to export")
        return 0
    from embedserve.engines import EngineOptions, create_engine

    logging.basicConfig(level="INFO", format="%(message)s")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    failed = 0
    for entry in entries:
        try:
            create_engine(entry, EngineOptions.from_settings(settings)).close()
        except Exception as exc:
            failed += 1
            print(f"embedserve: error: model '{entry.id}': {type(exc).__name__}: {exc}", file=sys.stderr)
    if failed:
        return 1
    print(f"{len(entries)} model(s) exported or already cached")
    return 0


def _prompts(spec: ModelSpec, directory: Path | None) -> str:
    """The model's non-empty prompts, its own and the catalogue's: ``name(origin)``, the default
    marked ``*``; ``?`` when the model's files are not on this machine."""
    try:
        settings = merge(spec, read_model_config(directory, spec) if directory else None)
    except ValueError as exc:
        return f"error: {exc}"
    shown = [
        f"{name}({p.origin}){'*' if name == settings.default_prompt else ''}"
        for name, p in sorted(settings.prompts.items())
        if p.text
    ]
    return ",".join(shown) or ("-" if directory else "?")


def _hub_cached(repo_id: str, revision: str | None) -> Path | None:
    """The model's directory in the Hugging Face cache, if it is there."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:
        return None
    return Path(found).parent if isinstance(found, str) else None


def _serve(settings: Settings, catalog: Catalog) -> int:
    import uvicorn

    from embedserve.api import create_app
    from embedserve.api.connections import ConnectionLimits, guarded_protocol, raise_fd_limit
    from embedserve.api.shutdown import BACKSTOP, GracefulServer
    from embedserve.engines import passive_omp_threads
    from embedserve.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    passive_omp_threads()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, with whatever handler was there
    # before it: make that a no-op so a clean shutdown ends with exit status 0, not 143 or a traceback.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    app = create_app(settings, catalog)
    log.info(
        "embedserve %s: %d models from %s on http://%s:%d",
        __version__,
        len(catalog.entries),
        settings.config,
        settings.host,
        settings.port,
    )
    if settings.api_keys:
        log.info("API keys: %d configured; requests without one get 401", len(settings.api_keys))
    if warning := bind_warning(settings):
        log.warning(warning)
    # On SIGTERM uvicorn stops accepting; requests in flight (queued ones included) may finish for
    # shutdown_grace seconds, then the drain answers those left with 503 (api/shutdown.py), and the
    # lifespan's shutdown closes the models.
    raise_fd_limit()
    limits = ConnectionLimits(
        header_timeout=settings.header_timeout,
        min_body_rate=settings.min_body_rate,
        max_header_bytes=settings.max_header_bytes,
        max_connections=settings.max_connections,
        allowed_hosts=None if settings.api_keys else tuple(h.lower() for h in settings.allowed_hosts),
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        access_log=False,  # embedserve.access logs each request, with its id
        timeout_graceful_shutdown=settings.shutdown_grace + BACKSTOP,
        http=guarded_protocol(limits),  # header, body and idle timeouts, header size, connection cap
        timeout_keep_alive=settings.idle_timeout,
    )
    GracefulServer(config, drain=app.state.drain, grace=settings.shutdown_grace).run()
    _exit_past_busy_threads()
    return 0


def _exit_past_busy_threads(wait: float = 2.0) -> None:
    """Exit now (status 0) if a worker thread is still busy a moment after the server stopped: a
    tokenizer or forward pass of a request already answered with 503 must not hold up the exit
    that Python's interpreter shutdown would otherwise wait for."""
    deadline = time.monotonic() + wait
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        log.warning("worker threads still busy after shutdown: exiting without waiting for them")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _ray_config(settings: Settings, catalog: Catalog) -> int:
    from embedserve.deploy.ray_config import serve_config_yaml

    print(serve_config_yaml(settings, catalog), end="")
    return 0


def _serve_ray(settings: Settings, catalog: Catalog, address: str | None) -> int:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if address is None:
        from embedserve.deploy import local_cluster_env

        local_cluster_env()  # before ray is imported
    try:
        from embedserve.deploy.ray_app import serve_on_ray
    except ImportError as exc:
        return _fail(f"--ray needs the ray extra: pip install 'embedserve[ray]' ({exc.name} is missing)")
    return serve_on_ray(settings, catalog, address)


def bind_warning(settings: Settings) -> str | None:
    """The start-up warning for a server that anyone on the network can use, or ``None``."""
    if settings.api_keys or _is_loopback(settings.host):
        return None
    return (
        f"listening on {settings.host} without API keys: anyone who reaches this address can use the server; "
        "set EMBEDSERVE_API_KEYS or EMBEDSERVE_API_KEYS_FILE"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _eval(args: argparse.Namespace) -> int:
    # imported here so that serve never imports psycopg, matplotlib or the eval extra at all
    try:
        from embedserve.evaluation import report
        from embedserve.evaluation.runner import USER_ERRORS, EvalConfig, run_eval
    except ImportError as exc:
        return _fail(f"eval needs the eval extra: pip install 'embedserve[eval]' ({exc.name} is missing)")
    for flag, value, least in (("--candidates", args.candidates, 1), ("--rerank-top", args.rerank_top, 0)):
        if value < least:
            return _fail(f"{flag} must be at least {least}")
    if not 1 <= args.ef_search <= 1000 or args.ef_search < args.candidates:
        return _fail("--ef-search must be between --candidates and 1000 (pgvector's range)")
    if args.keep and not args.dsn:
        print("embedserve: note: --keep applies to --dsn; the embedded database is deleted at the end", file=sys.stderr)
    config = EvalConfig(
        dataset=args.dataset,
        url=args.url,
        api_key=args.api_key,
        dsn=args.dsn,
        dense=args.dense,
        sparse=args.sparse,
        rerank=args.rerank,
        rrf_k=args.rrf_k,
        candidates=args.candidates,
        rerank_top=args.rerank_top,
        ef_search=args.ef_search,
        keep=args.keep,
        batch_size=args.batch_size,
        split=args.split,
        progress=not args.no_progress,
    )
    # SIGTERM unwinds like Ctrl-C, so the embedded PostgreSQL and the schema are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = run_eval(config)
    except USER_ERRORS as exc:
        return _fail(f"eval: {exc}")
    print(report.format_table(result))
    stem = args.out / result.dataset
    report.write_json(result, stem.with_suffix(".json"))
    report.write_png(result, stem.with_suffix(".png"))
    kept = f"; tables kept in schema {result.schema}" if result.schema else ""
    print(f"wrote {stem}.json and {stem}.png{kept}")
    return 0

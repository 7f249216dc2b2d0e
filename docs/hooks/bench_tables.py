"""MkDocs hook: the benchmark tables, built at build time from ``bench/results/*.json``.

A page writes ``<!-- bench: NAME -->`` and gets the table :data:`TABLES` makes for NAME from the
JSON file the benchmark script wrote, so no figure on the site is typed by hand. A marker with an
unknown name, or a results file that is missing, stops the build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = re.compile(r"<!-- bench: ?([a-z0-9-]+) -->")
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"

Json = dict[str, Any]
TIMES = "\u00d7"  # the multiplication sign of "1.34x"


def load(results: Path, name: str) -> Json:
    """``bench/results/<name>.json``."""
    data: Json = json.loads((results / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _loads(rows: list[Json]) -> list[tuple[int, int]]:
    """The (concurrency, inputs a request) loads of a run, in the order it ran them."""
    return list(dict.fromkeys((r["concurrency"], r["items_per_request"]) for r in rows))


def _load_header(loads: list[tuple[int, int]]) -> list[str]:
    return [f"c={c}, n={n}" for c, n in loads]


def batching(results: Path) -> str:
    """Served items/s per task, server and load (``bench/batching.py``), with the ratios to the ceiling."""
    rows = load(results, "batching")["rows"]
    loads = _loads(rows)
    table = []
    for task, server in dict.fromkeys((r["task"], r["server"]) for r in rows):
        cells = []
        for c, n in loads:
            hit = [
                r
                for r in rows
                if (r["task"], r["server"], r["concurrency"], r["items_per_request"]) == (task, server, c, n)
            ]
            if not hit:
                cells.append("—")
                continue
            r = hit[0]
            extra = f", {r['embedserve_ratio']}{TIMES}" if "embedserve_ratio" in r else ""
            cells.append(f"{_num(r['items_per_second'])} ({r['ratio_to_ceiling']:.2f}{extra})")
        table.append([task, server, *cells])
    return _table(["task", "server", *_load_header(loads)], table)


def batching_ceilings(results: Path) -> str:
    """The in-process ceilings ``bench/batching.py`` measured before and after the served loads."""
    ceiling = load(results, "batching")["ceiling"]
    rows = [
        [name, _num(c["items_per_second"]), str(c["batch_size"]), _num(c["before"]), _num(c["after"])]
        for name, c in ceiling.items()
        if "items_per_second" in c
    ]
    return _table(["task / inputs", "items/s (mean)", "best batch size", "before", "after"], rows)


def batching_targets(results: Path) -> str:
    """The targets ``bench/batching.py`` checked in the run the speed table comes from, with its values."""
    targets = _speed_run(results)["targets"]
    rows = [[t["target"], str(t["value"]), "met" if t["met"] else "**missed**"] for t in targets]
    return _table(["target", "value", ""], rows)


def _speed_run(results: Path) -> Json:
    """The last full run when it has the speed figures, else the last ``--quick`` run."""
    full = load(results, "batching")
    return full if full.get("speed") else load(results, "batching-quick")


def _speed(results: Path) -> Json:
    """The ``speed`` section of the last full run, else of the last ``--quick`` run."""
    speeds: Json = _speed_run(results)["speed"]
    return speeds


def batching_speed(results: Path) -> str:
    """The dense model served on each speed engine against that engine's own in-process ceiling."""
    rows = []
    for engine, s in _speed(results).items():
        cells = [engine]
        for key, ceiling in (("c32_n1", "ceiling_queries"), ("c4_n32", "ceiling_documents")):
            served = s.get(key)
            own = (served or {}).get("ceiling", s[ceiling])  # measured around that load, where it was
            cells.append(_num(own["items_per_second"]))
            cells.append(f"{_num(served['items_per_second'])} ({served['ratio_to_ceiling']:.2f})" if served else "—")
        single = s.get("single_query")
        if single:
            floor = single.get("http_floor_p50_ms")
            cells.append(
                f"{_num(single['served_p50_ms'], 2)} / {_num(single['encode_p50_ms'], 2)} ({single['gap_ms']:+.2f})"
                + (f" [{_num(floor, 2)}]" if floor is not None else "")
            )
        else:
            cells.append("—")
        rows.append(cells)
    header = [
        "engine",
        "ceiling, queries",
        "c=32, n=1",
        "ceiling, documents",
        "c=4, n=32",
        "c=1 p50 ms: served / in-process (gap) [HTTP round trip alone]",
    ]
    return _table(header, rows)


def batching_cpu(results: Path) -> str:
    """Where a text's CPU time went while each speed engine was served at c=32 (one text a request)."""
    rows = []
    for engine, s in _speed(results).items():
        served = s.get("c32_n1", {})
        cpu = served.get("cpu_ms_per_item")
        if not cpu:
            continue
        roles = ("event_loop", "tokenizer", "model", "other", "load_generator")
        bound = served.get("ratio_with_a_free_server")
        rows.append(
            [engine]
            + [_num(cpu.get(role, 0.0), 2) for role in roles]
            + [_num(s["ceiling_queries"].get("cpu_ms_per_item", float("nan")), 2)]
            + [f"{served['ratio_to_ceiling']:.2f}", f"{bound:.2f}" if bound is not None else "—"]
        )
    if not rows:
        return "_No CPU figures in the last run._"
    header = [
        "engine",
        "event loop",
        "tokenizer threads",
        "model threads",
        "other threads",
        "load generator",
        "in-process ceiling",
        "served / ceiling",
        "if the server's own work were free",
    ]
    return _table(header, rows)


def _engines(results: Path, name: str) -> str:
    data = load(results, name)
    rows = data["rows"]
    loads = _loads(rows)
    table = []
    for engine, task in dict.fromkeys((r["engine"], r["task"]) for r in rows):
        ceiling = data["ceiling"].get(f"{task}/{engine}")
        cells = [f"{_num(ceiling['items_per_second'])} ({ceiling['ratio_to_torch']:.2f})" if ceiling else "—"]
        for c, n in loads:
            hit = [
                r
                for r in rows
                if (r["engine"], r["task"], r["concurrency"], r["items_per_request"]) == (engine, task, c, n)
            ]
            cells.append(f"{_num(hit[0]['items_per_second'])} ({hit[0]['ratio_to_torch']:.2f})" if hit else "—")
        table.append([engine, task, *cells])
    return _table(["engine", "task", "in-process ceiling", *_load_header(loads)], table)


def engines(results: Path) -> str:
    """Every engine against torch: in-process ceiling and served loads (``bench/batching.py --engines-only``)."""
    return _engines(results, "engines")


def engines_passes(results: Path) -> str:
    """torch (two passes side by side) against the default engine (``bench/results/engines-passes.json``)."""
    return _engines(results, "engines-passes")


def quality(results: Path) -> str:
    """Each engine's quality through the API against torch's, and the gate (``bench/quality.py``)."""
    data = load(results, "quality")
    rows = []
    for engine, figures in data["figures"].items():
        diff = data["gate"][engine]["diff"]
        cells = [f"{figures[k]:.2f} ({diff[k]:+.2f})" for k in ("sts", "ndcg_dense", "ndcg_sparse")]
        rows.append([engine, *cells, "pass" if data["gate"][engine]["passes"] else "**fail**"])
    return _table(["engine", "STS Spearman (diff)", "SciFact nDCG@10 dense (diff)", "sparse (diff)", "gate"], rows)


def quality_data(results: Path) -> str:
    """What ``bench/quality.py`` ran on."""
    data = load(results, "quality")["data"]
    return _table(
        ["STS pairs", "SciFact queries", "SciFact documents"],
        [[f"{data[k]:,}" for k in ("sts_pairs", "queries", "documents")]],
    )


def ray(results: Path) -> str:
    """Ray Serve against the single-process server: items/s ratio and p50 ratio per load (``bench/ray_deploy.py``)."""
    ratios = load(results, "ray")["ratios"]
    loads = _loads(ratios)
    table = []
    for task in dict.fromkeys(r["task"] for r in ratios):
        cells = []
        for c, n in loads:
            hit = [r for r in ratios if (r["task"], r["concurrency"], r["items_per_request"]) == (task, c, n)]
            cells.append(f"{hit[0]['throughput_ratio']:.2f} ({hit[0]['p50_ratio']:.2f}{TIMES} p50)" if hit else "—")
        table.append([task, *cells])
    return _table(["task", *_load_header(loads)], table)


def eval_scifact(results: Path) -> str:
    """``embedserve eval`` on SciFact through the server, against the same models in-process (``bench/eval.py``)."""
    data = load(results, "eval_scifact")
    served, inprocess = data["served"], data.get("inprocess", {})
    rows = []
    for method, m in served["metrics"].items():
        latency = served["latency_ms"][method]
        there = inprocess.get(method)
        base = f"{there['ndcg@10']:.2f} ({m['ndcg@10'] - there['ndcg@10']:+.2f})" if there else "—"
        rows.append(
            [
                method,
                f"{m['ndcg@10']:.2f}",
                f"{m['mrr@10']:.2f}",
                f"{m['recall@100']:.2f}",
                f"{latency['p50']:.0f} / {latency['p95']:.0f} ms",
                base,
            ]
        )
    return _table(["method", "nDCG@10", "MRR@10", "Recall@100", "latency p50 / p95", "in-process nDCG@10 (diff)"], rows)


def eval_scifact_run(results: Path) -> str:
    """What the SciFact evaluation ran on."""
    s = load(results, "eval_scifact")["served"]
    models = ", ".join(f"{k}: `{v}`" for k, v in s["models"].items())
    rows = [[s["dataset"], f"{s['documents']:,}", f"{s['queries']:,}", models, s["database"]]]
    return _table(["dataset", "documents", "queries", "models", "database"], rows)


def long_inputs(results: Path) -> str:
    """nDCG@10 on SciFact through ``embedserve eval``, long inputs truncated and chunked (``bench/long_inputs.py``)."""
    data = load(results, "long_inputs")
    runs, info = data["runs"], data["data"]
    rows = []
    for method, cut in runs["truncate"]["metrics"].items():
        chunked = runs["chunk"]["metrics"][method]
        diff = chunked["ndcg@10"] - cut["ndcg@10"]
        rows.append(
            [
                method,
                f"{cut['ndcg@10']:.2f}",
                f"{chunked['ndcg@10']:.2f} ({diff:+.2f})",
                f"{cut['recall@100']:.2f} / {chunked['recall@100']:.2f}",
            ]
        )
    longer = ", ".join(
        f"`{name}`: {d['longer']:,} longer than {d['max_length']} tokens" for name, d in info["long_documents"].items()
    )
    seconds = ", ".join(f"{mode} {run['embed_corpus_seconds']:,.0f} s" for mode, run in runs.items())
    rerank = ", ".join(f"{mode} {run['rerank_p50_ms']:,.0f} ms" for mode, run in runs.items())
    note = (
        f"{info['dataset']}: {info['queries']:,} test queries, {info['documents']:,} documents ({longer}); "
        f"hybrid results reranked: top {info['rerank_top']}. Corpus embedded in: {seconds}; "
        f"rerank p50: {rerank}."
    )
    header = ["method", "nDCG@10 truncate", "nDCG@10 chunk (diff)", "Recall@100 truncate / chunk"]
    return _table(header, rows) + "\n\n" + note


def cache(results: Path) -> str:
    """The embedding cache off and on over the same loads (``bench/cache.py``): p50, p99 and
    requests a second, with the ratios to the cache off."""
    data = load(results, "cache")
    rows = []
    loads = [("one text a request, half repeating", "all-minilm-l6-v2", data["half_repeat"])]
    loads += [("rerank, 20 documents from a pool of 300", model, runs) for model, runs in data["rerank"].items()]
    for label, model, runs in loads:
        off = runs["off"]
        for name, run in runs.items():
            ratio = "" if name == "off" else f" ({off['p50_ms'] / run['p50_ms']:.1f}{TIMES} faster)"
            rate = "" if name == "off" else f" ({run['requests_per_second'] / off['requests_per_second']:.1f}{TIMES})"
            hit = "" if run.get("hit_ratio") is None else f"{run['hit_ratio']:.0%}"
            rows.append(
                [
                    label,
                    f"`{model}`",
                    name,
                    f"{_num(run['p50_ms'])}{ratio}",
                    _num(run["p99_ms"]),
                    f"{_num(run['requests_per_second'])}{rate}",
                    hit,
                ]
            )
    header = ["load", "model", "cache", "p50 ms", "p99 ms", "requests/s", "hits"]
    clients = data["concurrency"]
    note = f"{data['seconds']:g} s a load, {clients['embeddings']} clients (rerank: {clients['rerank']})"
    if data.get("quick"):
        note += " (a `--quick` run: short loads, noisy figures)"
    return _table(header, rows) + f"\n\n{note}."


def cache_memory(results: Path) -> str:
    """The in-process cache's bound under a long run of unique texts (``bench/cache.py``)."""
    m = load(results, "cache")["memory"]
    mib = 2**20
    rows = [
        ["bound (`EMBEDSERVE_CACHE_BYTES`)", f"{m['bound_bytes'] / mib:g} MiB"],
        ["unique texts sent", f"{m['texts']:,} ({m['passes_through_bound']:g}{TIMES} the bound)"],
        ["most bytes the cache held", f"{m['max_cache_bytes'] / mib:.2f} MiB"],
        [
            "server RSS: first sample, cache full, last",
            f"{m['rss_mib_first']} / {m['rss_mib_at_bound']} / {m['rss_mib_last']} MiB",
        ],
    ]
    return _table(["", ""], rows)


def figures(results: Path) -> str:
    """One-line figures: STS through the API, start-up time and memory, a few A/B runs in one process."""
    rows = []
    sts = load(results, "sts")
    rows.append(
        [
            f"STS Benchmark Spearman of `{sts['model']}`, served / in-process (MTEB publishes {sts['published_mteb']})",
            f"{sts['served_spearman']:.2f} / {sts['inprocess_spearman']:.2f}",
            "`bench/sts.py`",
        ]
    )
    start = load(results, "startup")
    state = "venv already installed" if start["venv_was_installed"] else "fresh clone: creates the venv and installs"
    rows.append([f"`make run` to ready ({state})", f"{start['seconds_to_ready']:.1f} s", "`bench/startup.py`"])
    rows.append(
        [
            "server memory with the default catalogue, idle / after a warm-up",
            f"{start['idle']['rss_mib']:.0f} / {start['after_warm_up']['rss_mib']:.0f} MiB RSS",
            "`bench/startup.py`",
        ]
    )
    loads = ", ".join(f"{model} {seconds:.1f} s" for model, seconds in start["load_seconds"].items())
    rows.append(["each model's load at start-up", loads, "`bench/startup.py`"])
    first = load(results, "first_token")
    speedups = ", ".join(f"{k}: {v['speedup_median']:.2f}{TIMES}" for k, v in first.items() if "speedup_median" in v)
    rows.append(
        [
            "cross-encoder, first-token last layer against the full one (median speed-up)",
            speedups,
            "`bench/first_token.py`",
        ]
    )
    passes = load(results, "passes")["ratio_passes2_to_passes1"]
    ratios = ", ".join(f"c={c}: {r:.2f}{TIMES}" for c, r in passes.items())
    rows.append(["torch `passes: 2` against `passes: 1`, served queries/s", ratios, "`bench/passes.py`"])
    middleware = load(results, "middleware")["results"]
    added = ", ".join(f"{k}: +{v['added_us']:.0f} µs" for k, v in middleware.items())
    rows.append(["the middleware stack's cost per request", added, "`bench/middleware.py`"])
    return _table(["figure", "value", "script"], rows)


def first_token_engines(results: Path) -> str:
    """``bench/first_token.py``: each engine one ~350-token pair at a time, against torch first-token."""
    data = load(results, "first_token")["engines_one_pair"]
    rows = [
        [label, _num(data["pairs_per_second_median"][label], 2), f"{ratio:.2f}{TIMES}"]
        for label, ratio in data["ratio_to_baseline_median"].items()
    ]
    note = f"One pair of {data['pair_tokens']} tokens a forward pass."
    return _table(["engine, last layer", "pairs/s (median)", f"ratio to {data['baseline']}"], rows) + "\n\n" + note


def overload(results: Path) -> str:
    """The floods of ``bench/overload.py``: each issue-20 target with its measured value."""
    data = load(results, "overload")
    rows = []
    for row in data["floods"].values():
        texts = row["texts_per_request"]
        load_ = f"{row['clients']:,} clients {TIMES} {texts} text{'s' if texts > 1 else ''}"
        statuses = ", ".join(f"{k}: {v:,}" for k, v in row["statuses"].items())
        floor = row.get("null_server", {})
        rows.append(
            [
                load_,
                statuses,
                _num(row["texts_per_second_served"]),
                _ms_beside(row["refused_p99_ms"], floor.get("refused_p99_ms"), "no 429"),
                _ms_beside(row.get("refused_p99_steady_ms"), floor.get("refused_p99_steady_ms"), ""),
                str(row["deadline_503_steady"]),
                _ms_beside(row["health_p99_ms"], floor.get("health_p99_ms"), ""),
                f"{row['recovery_s']:.2f} s",
                _cpu_per_answer(row.get("cpu_ms_per_answer")),
            ]
        )
    header = [
        "flood",
        "answers",
        "texts/s served",
        "429 p99 (< 50 ms)",
        "429 p99 after the first second",
        "503 at the deadline, steady (0)",
        "/health p99 (< 50 ms)",
        "normal service after (< 1 s)",
        "CPU ms an answer: event loop / model threads",
    ]
    waiting = {
        "retry-after-ms": "clients waiting out Retry-After-Ms",
        "retry-after": "clients waiting out Retry-After",
        "none": "clients resending at once",
    }
    clients = data.get("clients_wait", "retry-after" if data["clients_honour_retry_after"] else "none")
    note = (
        f"Model `{data['model']}`, deadline {data['request_timeout_s']:g} s, {waiting[clients]}. "
        "In brackets: the null server under the same flood (`bench/null_server.py`, the floor)."
    )
    return _table(header, rows) + "\n\n" + note


def _cpu_per_answer(cpu: Json | None) -> str:
    if not cpu:
        return "—"
    return f"{_num(cpu['event_loop'], 2)} / {_num(cpu['model'], 2)}"


def _ms_beside(value: float | None, floor: float | None, missing: str) -> str:
    """``value`` ms, with the null server's ``floor`` in brackets when measured."""
    if value is None:
        return missing
    return f"{value:.1f} ms" + ("" if floor is None else f" ({floor:.1f} ms)")


def gpu(results: Path) -> str:
    """The torch engine on a GPU (``bench/gpu.py``): served items/s per dtype and load, with the
    ratio to the in-process ceiling on the same GPU."""
    data = load(results, "gpu")
    table = []
    for key, rows in data["served"].items():
        dtype = key.split("/")[1]
        for row in rows:
            name = "queries" if row["items_per_request"] == 1 else "documents"
            ceiling = data["ceiling"][f"dense/{dtype}/{name}"]
            table.append(
                [
                    dtype,
                    f"c={row['concurrency']}, n={row['items_per_request']}",
                    _num(row["items_per_second"]),
                    f"{row['p50_ms']:.1f} / {row['p99_ms']:.1f}",
                    f"{_num(ceiling['items_per_second'])} (batch {ceiling['batch_size']})",
                    f"{row['ratio_to_ceiling']:.2f}",
                ]
            )
    return _table(["dtype", "load", "served items/s", "p50 / p99 ms", "ceiling items/s", "ratio"], table)


def gpu_correctness(results: Path) -> str:
    """Served against the library on the same GPU (``bench/gpu.py``)."""
    data = load(results, "gpu")
    rows = []
    for key, figures in data["correctness"].items():
        shown = ", ".join(
            f"{name.replace('_', ' ')}: {value:.6f}" if "cosine" in name else f"{name.replace('_', ' ')}: {value:.2g}"
            for name, value in figures.items()
        )
        rows.append([f"`{key}`", shown])
    note = f"On {data['device']}, torch {data['torch']}."
    return _table(["model / dtype", "served against the library"], rows) + "\n\n" + note


TABLES: dict[str, Callable[[Path], str]] = {
    "batching": batching,
    "batching-ceilings": batching_ceilings,
    "batching-targets": batching_targets,
    "batching-speed": batching_speed,
    "batching-cpu": batching_cpu,
    "engines": engines,
    "engines-passes": engines_passes,
    "quality": quality,
    "quality-data": quality_data,
    "ray": ray,
    "eval-scifact": eval_scifact,
    "eval-scifact-run": eval_scifact_run,
    "figures": figures,
    "cache": cache,
    "cache-memory": cache_memory,
    "gpu": gpu,
    "long-inputs": long_inputs,
    "overload": overload,
    "first-token-engines": first_token_engines,
    "gpu-correctness": gpu_correctness,
}


def render(markdown: str, results: Path = RESULTS) -> str:
    """Replace every ``<!-- bench: NAME -->`` marker in a page's Markdown with its table."""

    def table(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in TABLES:
            raise KeyError(f"unknown benchmark table {name!r}; known: {', '.join(TABLES)}")
        return TABLES[name](results)

    return MARKER.sub(table, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: every page goes through :func:`render`; a failure stops the build with its reason."""
    from mkdocs.exceptions import PluginError

    try:
        return render(markdown)
    except (LookupError, ValueError, OSError) as exc:
        raise PluginError(f"{__name__}: {exc}") from exc

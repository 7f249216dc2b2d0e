"""The evaluation's outputs: a console table, a JSON file and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

from embedserve.evaluation.runner import METHODS, EvalResult

COLUMNS = (("nDCG@10", "ndcg@10"), ("MRR@10", "mrr@10"), ("Recall@100", "recall@100"))


def format_table(result: EvalResult) -> str:
    """One row per method: the three scores (percent) and the client's latency (p50 / p95 ms)."""
    header = ("method", *(name for name, _ in COLUMNS), "p50 ms", "p95 ms")
    rows = [header]
    for method in METHODS:
        scores = result.metrics[method]
        latency = result.latency_ms[method]
        rows.append(
            (
                method,
                *(f"{scores[key]:.2f}" for _, key in COLUMNS),
                f"{latency['p50']:.1f}",
                f"{latency['p95']:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        f"{result.dataset} ({result.settings['split']}): {result.documents} documents, {result.queries} queries; "
        f"{result.database}",
        f"models: dense {result.models['dense']}, sparse {result.models['sparse']}, rerank {result.models['rerank']} "
        f"(top {result.settings['rerank_top']} of hybrid); RRF k={result.settings['rrf_k']} "
        f"over the top {result.settings['candidates']} of each",
    ]
    for row in rows:
        cells = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([row[0].ljust(widths[0]), *cells]))
    seconds = ", ".join(f"{step} {value:.1f} s" for step, value in result.seconds.items())
    lines.append(f"sparse rows trimmed to 1,000 non-zeros: {result.trimmed_rows}; {seconds}")
    return "\n".join(lines)


def write_json(result: EvalResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")


def write_png(result: EvalResult, path: Path) -> None:
    """Grouped bars: each metric for each method, and the p50 latency beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (scores, latency) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1.3]})
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        offsets = [c + (i - (len(METHODS) - 1) / 2) * width for c in range(len(COLUMNS))]
        values = [result.metrics[method][key] for _, key in COLUMNS]
        bars = scores.bar(offsets, values, width, label=method)
        scores.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    scores.set_xticks(range(len(COLUMNS)), [name for name, _ in COLUMNS])
    scores.set_ylabel("score (%)")
    scores.set_ylim(0, 118)
    scores.legend(loc="upper center", fontsize=8, ncols=len(METHODS), frameon=False)
    scores.set_title(f"{result.dataset}: {result.documents} documents, {result.queries} queries", fontsize=10)
    p50 = [result.latency_ms[m]["p50"] for m in METHODS]
    bars = latency.bar(range(len(METHODS)), p50, color=[f"C{i}" for i in range(len(METHODS))])
    latency.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    latency.set_xticks(range(len(METHODS)), METHODS, rotation=30, ha="right", fontsize=8)
    latency.set_yscale("log")
    latency.set_ylabel("p50 latency per query (ms, log)")
    latency.set_title("query + search", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)

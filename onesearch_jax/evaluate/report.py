"""Evaluation results as numbers, tables, lines and plots.

For each system (the model at a step, BM25) and each kind of ground truth (``click``: R = the
session's clicked items, ``order``: R = its purchased items), :func:`score_systems` computes the
per-query metrics of :mod:`onesearch_jax.evaluate.metrics`; :func:`summarise` averages them over
all queries and over each segment. The files of one evaluated step:

* ``metrics.json``: the summary (means, query counts, valid-SID rate, segments, settings);
* ``metrics.md``: the same as Markdown tables;
* ``predictions.jsonl``: one line per query (its SIDs, scores, items, BM25 items, hit ranks);
* ``hr_at_k.png`` and ``segments.png``: HR@K for K = 1..max(ks), and HR@max(ks) per segment.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onesearch_jax.evaluate.metrics import METRICS, QUERIES_KEY, aggregate, per_query_metrics
from onesearch_jax.evaluate.segments import SEGMENTS
from onesearch_jax.evaluate.test_set import EvalQuery

TRUTHS = ("click", "order")
PerQuery = dict[str, dict[str, np.ndarray]]  # truth -> metric@K -> [n]


def relevant_items(queries: Sequence[EvalQuery], truth: str) -> list[tuple[int, ...]]:
    """R of every query for ``truth`` (``click`` or ``order``)."""
    if truth not in TRUTHS:
        raise ValueError(f"truth must be one of {TRUTHS}, got {truth!r}")
    return [q.clicked if truth == "click" else q.ordered for q in queries]


def score_system(queries: Sequence[EvalQuery], items: Sequence[Sequence[int]], ks: Sequence[int]) -> PerQuery:
    """Per-query metrics of one system's ranked items, for clicks and for orders."""
    return {truth: per_query_metrics(items, relevant_items(queries, truth), ks) for truth in TRUTHS}


def segment_masks(queries: Sequence[EvalQuery]) -> dict[str, dict[str, np.ndarray]]:
    """family -> label -> boolean mask over ``queries``, labels in :data:`SEGMENTS` order."""
    return {
        family: {label: np.array([q.segments[family] == label for q in queries], bool) for label in labels}
        for family, labels in SEGMENTS.items()
    }


def summarise(queries: Sequence[EvalQuery], systems: Mapping[str, PerQuery]) -> dict[str, Any]:
    """Means over all queries and per segment: ``{"overall": ..., "segments": ...}``.

    ``overall[system][truth]`` is :func:`aggregate`'s dict (``queries`` counts the queries with
    a non-empty R); ``segments[family][label]`` has ``sessions`` (queries in the segment) and
    the same per system and truth. Labels no query has are left out.
    """
    overall = {name: {truth: aggregate(pq[truth]) for truth in TRUTHS} for name, pq in systems.items()}
    segments: dict[str, dict[str, Any]] = {}
    for family, labels in segment_masks(queries).items():
        rows = {}
        for label, mask in labels.items():
            if mask.any():
                per_system = {name: {t: aggregate(pq[t], mask) for t in TRUTHS} for name, pq in systems.items()}
                rows[label] = {"sessions": int(mask.sum()), **per_system}
        segments[family] = rows
    return {"overall": overall, "segments": segments}


def hit_rank(items: Sequence[int], relevant: Sequence[int]) -> int | None:
    """1-based rank of the first relevant item in ``items`` (None: no hit)."""
    wanted = set(relevant)
    return next((r for r, item in enumerate(items, 1) if item in wanted), None)


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def markdown(summary: Mapping[str, Any], ks: Sequence[int]) -> str:
    """The summary as Markdown: one table of overall metrics, one per-segment table at K = max(ks)."""
    k = max(ks)
    columns = [f"HR@{x}" for x in ks] + [f"{m.upper() if m != 'recall' else 'Recall'}@{k}" for m in METRICS[1:]]
    keys = [f"hr@{x}" for x in ks] + [f"{m}@{k}" for m in METRICS[1:]]
    lines = [
        f"Step {summary['step']}, {summary['split']} split: {summary['sessions']} sessions "
        f"({summary['overall_counts']['click']} with a click, {summary['overall_counts']['order']} with an order).",
        "",
        "| system | truth | " + " | ".join(columns) + " | sessions |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    for name, truths in summary["overall"].items():
        for truth, values in truths.items():
            cells = " | ".join(_fmt(values[key]) for key in keys)
            lines.append(f"| {name} | {truth} | {cells} | {int(values[QUERIES_KEY])} |")
    if summary.get("valid_sid_rate"):
        rate = summary["valid_sid_rate"]
        lines += ["", f"Valid-SID rate of unconstrained beam search: top-1 {rate['top1']:.2%}, all top-{k} "
                  f"{rate['all']:.2%}."]  # fmt: skip
    systems = list(summary["overall"])
    header = [f"{s} {t} HR@{k}" for t in TRUTHS for s in systems]
    lines += ["", f"Per segment (HR@{k}; sessions with a click / an order in brackets):", "",
              "| segment | sessions | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]  # fmt: skip
    for family, rows in summary["segments"].items():
        for label, row in rows.items():
            cells = []
            for truth in TRUTHS:
                for system in systems:
                    values = row[system][truth]
                    cells.append(f"{_fmt(values[f'hr@{k}'])} ({int(values[QUERIES_KEY])})")
            lines.append(f"| {family}={label} | {row['sessions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(path: Path, value: Any) -> None:
    """Writes ``value`` as indented JSON, NaN as null, via a temporary file renamed into place."""
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text(json.dumps(json_safe(value), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def json_safe(value: Any) -> Any:
    """``value`` with every float NaN replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def plot_hr_curves(path: Path, queries: Sequence[EvalQuery], items: Mapping[str, Sequence[Sequence[int]]],
                   max_k: int, title: str) -> None:  # fmt: skip
    """``path``: HR@K for K = 1..max_k, one line per system and truth."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ks = list(range(1, max_k + 1))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, ranked in items.items():
        for truth, style in zip(TRUTHS, ("-", "--"), strict=True):
            values = per_query_metrics(ranked, relevant_items(queries, truth), ks)
            ax.plot(ks, [aggregate({"hr": values[f"hr@{k}"]})["hr"] for k in ks], style, marker="o",
                    markersize=3, label=f"{name}, {truth}")  # fmt: skip
    ax.set(xlabel="K (items)", ylabel="HR@K", title=title, ylim=(0, 1), xticks=ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_segments(path: Path, summary: Mapping[str, Any], k: int, title: str) -> None:
    """``path``: HR@k per segment label, one panel per family, bars per system and truth."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    families = [f for f, rows in summary["segments"].items() if rows]
    systems = list(summary["overall"])
    bars = [(s, t) for t in TRUTHS for s in systems]
    fig, axes = plt.subplots(1, len(families), figsize=(3.6 * len(families), 3.8), squeeze=False)
    width = 0.8 / len(bars)
    for ax, family in zip(axes[0], families, strict=True):
        labels = list(summary["segments"][family])
        x = np.arange(len(labels))
        for i, (system, truth) in enumerate(bars):
            values = [summary["segments"][family][label][system][truth][f"hr@{k}"] for label in labels]
            ax.bar(x + (i - (len(bars) - 1) / 2) * width, np.nan_to_num(values), width, label=f"{system}, {truth}")
        ax.set_xticks(x, [f"{label}\n({summary['segments'][family][label]['sessions']})" for label in labels],
                      fontsize=8)  # fmt: skip
        ax.set(title=family, ylim=(0, 1))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"HR@{k}")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

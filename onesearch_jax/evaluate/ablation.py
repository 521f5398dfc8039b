"""Ablations (``onesearch ablation``): one recipe, one component added per row, several seeds, one table.

Each row is an ``onesearch train`` run (its gin files and bindings) followed by ``onesearch eval``
of its last checkpoint, for every seed (``TrainConfig.seed`` and ``TrainConfig.data_seed`` both set
to the seed, the same for every row). Runs live in ``root/seed<S>/<row>/``; a run whose
``ablation.json`` exists is done and skipped, and an interrupted one resumes from its checkpoints
(``onesearch train`` resumes by itself), so the whole ablation can be stopped and restarted.

Shared prefix: rows that only differ after ``branch_step`` (e.g. LR-ESD rows, whose stages 1-2 are
SFT's) start from the first row's checkpoint at that step, copied into their own checkpoint
directory with its checksums, instead of training the same steps again. The first row keeps every
checkpoint (``CheckpointConfig.keep_last``) so that the branch step survives its run.

The summary (``root/summary.md`` and ``summary.json``) gives, per row, the mean and the sample
standard deviation over seeds of click and order HR@K / MRR@K, and of click HR@K per segment.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

DONE_FILE = "ablation.json"
KEEP_ALL_CHECKPOINTS = 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class AblationRow:
    """One row: a name (a directory name), its gin files and its extra bindings."""

    name: str
    gin_files: Sequence[str]
    bindings: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"AblationRow.name must be letters, digits, '_' or '-', got {self.name!r}")
        if not self.gin_files:
            raise ValueError(f"AblationRow {self.name!r} needs at least one gin file")
        object.__setattr__(self, "gin_files", tuple(self.gin_files))
        object.__setattr__(self, "bindings", tuple(self.bindings))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AblationConfig:
    """An ablation: rows, seeds and where they run.

    Attributes:
        root: directory of the runs and the summary.
        rows: the rows, baseline first.
        seeds: seeds run for every row.
        common_gin_files: gin files added after each row's own (e.g. the model size).
        eval_gin_files: gin files added for the evaluation (``gin/runs/eval.gin``).
        branch_step: rows after the first start from the first row's checkpoint at this step (0: every
            row trains from scratch).
        k: the K of the summary's HR@K and MRR@K (one of the evaluation's ``ks``).
    """

    root: str
    rows: Sequence[AblationRow]
    seeds: Sequence[int] = (0, 1, 2)
    common_gin_files: Sequence[str] = ("gin/models/tiny.gin",)
    eval_gin_files: Sequence[str] = ("gin/runs/eval.gin",)
    branch_step: int = 0
    k: int = 10

    def __post_init__(self) -> None:
        if not self.root:
            raise ValueError("AblationConfig.root must be a directory")
        if len(self.rows) < 1:
            raise ValueError("AblationConfig.rows must name at least one row")
        names = [row.name for row in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"AblationConfig.rows has repeated names: {names}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(isinstance(s, int) for s in self.seeds):
            raise ValueError(f"AblationConfig.seeds must be distinct ints, got {self.seeds!r}")
        if not isinstance(self.branch_step, int) or self.branch_step < 0:
            raise ValueError(f"AblationConfig.branch_step must be an int >= 0, got {self.branch_step!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"AblationConfig.k must be an int >= 1, got {self.k!r}")
        for name in ("rows", "seeds", "common_gin_files", "eval_gin_files"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def run_dir(self, seed: int, row: AblationRow) -> Path:
        """``root/seed<S>/<row>``: the run's ``MODEL_DIR``."""
        return Path(self.root) / f"seed{seed}" / row.name


def _gin_args(files: Sequence[str], bindings: Sequence[str]) -> list[str]:
    return [f"--gin_file={f}" for f in files] + [f"--gin.{b}" for b in bindings]


def train_command(config: AblationConfig, seed: int, row: AblationRow) -> list[str]:
    """The ``onesearch train`` command line of one run."""
    bindings = [
        f"MODEL_DIR='{config.run_dir(seed, row)}'",
        f"TrainConfig.seed={seed}",
        f"TrainConfig.data_seed={seed}",
        "TrainConfig.progress_bar=False",
        *row.bindings,
    ]
    if config.branch_step and row == config.rows[0]:
        bindings.append(f"CheckpointConfig.keep_last={KEEP_ALL_CHECKPOINTS}")
    return ["onesearch", "train", *_gin_args((*row.gin_files, *config.common_gin_files), bindings)]


def eval_command(config: AblationConfig, seed: int, row: AblationRow) -> list[str]:
    """The ``onesearch eval`` command line of one run (its latest checkpoint)."""
    files = (*row.gin_files, *config.eval_gin_files, *config.common_gin_files)
    bindings = [f"MODEL_DIR='{config.run_dir(seed, row)}'", *row.bindings]
    return ["onesearch", "eval", *_gin_args(files, bindings)]


def branch(config: AblationConfig, seed: int, row: AblationRow) -> Path | None:
    """Copies the first row's ``branch_step`` checkpoint into ``row``'s checkpoints (once).

    Returns:
        The copied step directory, or None when there is nothing to copy (no branching, the first
        row, or the run has checkpoints already).

    Raises:
        FileNotFoundError: the first row has no checkpoint at ``branch_step``.
    """
    if not config.branch_step or row == config.rows[0]:
        return None
    target = config.run_dir(seed, row) / "checkpoints"
    if target.exists() and any(p.name.isdigit() for p in target.iterdir()):
        return None
    source = config.run_dir(seed, config.rows[0]) / "checkpoints" / str(config.branch_step)
    if not source.is_dir():
        raise FileNotFoundError(
            f"{source}: the baseline row {config.rows[0].name!r} of seed {seed} has no checkpoint at branch_step "
            f"{config.branch_step} (CheckpointConfig.save_every_steps must divide it)"
        )
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(source, target / source.name))


def check_trained(run_dir: Path) -> int:
    """The run's final step, after checking that its training reached it.

    ``onesearch train`` exits 0 after a SIGTERM once its checkpoint has landed (a preempted run is
    resumed by running it again), so a clean exit does not mean a finished run: the latest
    checkpoint must be the curriculum's last step (the stages' ``num_steps`` in ``run.json``).

    Raises:
        RuntimeError: the latest checkpoint is short of the last step (the run was stopped); running
            the ablation again resumes it.
        FileNotFoundError: the run wrote no ``run.json``.
    """
    with open(run_dir / "run.json") as f:
        total = sum(int(stage["num_steps"]) for stage in json.load(f)["stages"])
    checkpoints = run_dir / "checkpoints"
    steps = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] if checkpoints.is_dir() else []
    latest = max(steps, default=0)
    if latest != total:
        raise RuntimeError(
            f"{run_dir}: training stopped at step {latest} of {total} (preempted or interrupted), so it is not "
            "evaluated; run the ablation again to resume it"
        )
    return total


def latest_metrics(run_dir: Path) -> tuple[int, dict[str, Any]]:
    """``(step, metrics.json)`` of the latest evaluated step under ``run_dir/eval``.

    Raises:
        FileNotFoundError: nothing was evaluated there.
    """
    steps = sorted(
        int(p.name.removeprefix("step_"))
        for p in (run_dir / "eval").glob("step_*")
        if (p / "metrics.json").is_file() and p.name.removeprefix("step_").isdigit()
    )
    if not steps:
        raise FileNotFoundError(f"{run_dir / 'eval'}: no evaluated step (step_<N>/metrics.json)")
    with open(run_dir / "eval" / f"step_{steps[-1]}" / "metrics.json") as f:
        return steps[-1], json.load(f)


Runner = Callable[[list[str]], None]


def _run(command: list[str]) -> None:
    executable = str(Path(sys.executable).with_name(command[0]))
    print("+ " + " ".join(command), flush=True)
    subprocess.run([executable, *command[1:]], check=True)


def run_ablation(config: AblationConfig, *, runner: Runner = _run) -> list[Path]:
    """Trains and evaluates every (seed, row) not done yet, seed by seed, rows in order.

    Returns:
        The run directories finished by this call.
    """
    finished = []
    for seed in config.seeds:
        for row in config.rows:
            run_dir = config.run_dir(seed, row)
            if (run_dir / DONE_FILE).is_file():
                continue
            branch(config, seed, row)
            train = train_command(config, seed, row)
            runner(train)
            check_trained(run_dir)
            runner(eval_command(config, seed, row))
            step, _ = latest_metrics(run_dir)
            record = {"row": row.name, "seed": seed, "eval_step": step, "train": train}
            (run_dir / DONE_FILE).write_text(json.dumps(record, indent=2) + "\n")
            finished.append(run_dir)
    return finished


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarise_ablation(config: AblationConfig) -> dict[str, Any]:
    """Mean and sample std over the finished seeds of each row's headline metrics and segments.

    Per row: ``overall[truth][metric]`` for truth click/order and metric ``hr@K``/``mrr@K``, and
    ``segments[family][segment][truth]`` = HR@K with ``segments[family][segment]["counts"]`` = the
    segment's test sessions and those with a click and with an order (the test split is the same
    for every seed); rows with no finished seed are left out.
    """
    k = config.k
    rows: dict[str, Any] = {}
    for row in config.rows:
        runs = [latest_metrics(config.run_dir(s, row))[1] for s in config.seeds
                if (config.run_dir(s, row) / DONE_FILE).is_file()]  # fmt: skip
        if not runs:
            continue
        overall = {
            truth: {m: _mean_std([r["overall"]["model"][truth][f"{m}@{k}"] for r in runs]) for m in ("hr", "mrr")}
            for truth in ("click", "order")
        }
        segments: dict[str, Any] = {}
        for family, groups in runs[0]["segments"].items():
            segments[family] = {
                group: {
                    **{truth: _mean_std([r["segments"][family][group]["model"][truth][f"hr@{k}"] for r in runs])
                       for truth in ("click", "order")},
                    "counts": _segment_counts(runs[0]["segments"][family][group]),
                }
                for group in groups
                if all(group in r["segments"][family] for r in runs)
            }  # fmt: skip
        rows[row.name] = {"seeds": len(runs), "overall": overall, "segments": segments}
    return {"k": k, "rows": rows}


def _segment_counts(segment: Mapping[str, Any]) -> dict[str, int]:
    """``{"sessions", "click", "order"}``: a segment's test sessions and those with each truth."""
    return {
        "sessions": int(segment["sessions"]),
        **{truth: int(segment["model"][truth]["queries"]) for truth in ("click", "order")},
    }


def _cell(stat: Mapping[str, float]) -> str:
    return "n/a" if math.isnan(stat["mean"]) else f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as Markdown: the headline table, then click and order HR@K per segment."""
    k, rows = summary["k"], summary["rows"]
    heads = [f"{t} {m.upper()}@{k}" for t in ("click", "order") for m in ("hr", "mrr")]
    lines = ["| row | seeds | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    for name, row in rows.items():
        cells = [_cell(row["overall"][t][m]) for t in ("click", "order") for m in ("hr", "mrr")]
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cells) + " |")
    if rows:
        first = next(iter(rows.values()))
        for family, groups in first["segments"].items():
            lines += ["", f"HR@{k} by {family.replace('_', ' ')} (click / order, mean ± std over seeds; under each "
                      "segment its test sessions, with a click / with an order)", ""]  # fmt: skip
            counts = [groups[g]["counts"] for g in groups]
            lines.append("| row | " + " | ".join(groups) + " |")
            lines.append("|---|" + "---|" * len(groups))
            lines.append("| (sessions) | " + " | ".join(f"{c['sessions']}: {c['click']} / {c['order']}"
                                                       for c in counts) + " |")  # fmt: skip
            for name, row in rows.items():
                cells = [
                    f"{_cell(row['segments'][family][g]['click'])} / {_cell(row['segments'][family][g]['order'])}"
                    if g in row["segments"].get(family, {})
                    else "n/a"
                    for g in groups
                ]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(config: AblationConfig) -> Path:
    """Writes ``root/summary.json`` and ``root/summary.md``; returns the Markdown file."""
    summary = summarise_ablation(config)
    root = Path(config.root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    path = root / "summary.md"
    path.write_text(summary_markdown(summary))
    return path

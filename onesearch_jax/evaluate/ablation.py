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

Chained runs: a row with ``init_from`` is a run of its own whose parameters start from an earlier
row's last checkpoint (``TrainConfig.init_checkpoint``), e.g. a TPMA-GRPO row after the SFT +
LR-ESD policy it fine-tunes; rows thus chain SFT -> LR-ESD (branched) -> TPMA-GRPO (initialised).

Probes: further ``onesearch eval`` runs of a finished run's last checkpoint with extra bindings,
written to ``run/eval_<probe>/``; LR-ESD's probe decodes the teacher's (keyword-augmented) input,
to check the method's premise that the teacher ranks better than the student. Adding a probe to a
finished ablation runs only the probe.

The summary (``root/summary.md`` and ``summary.json``) gives, per row, the mean and the sample
standard deviation over seeds of click and order HR@K / MRR@K, of each row's difference from the
baseline row of the same seed (paired, so that the seed-to-seed spread shared by both rows drops
out), of the teacher-forced validation cross-entropy, and of click and order HR@K per segment;
per probe, the same headline numbers and their paired difference from the row's own evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onesearch_jax.pipeline.stages import Runner, duration, run_onesearch
from onesearch_jax.train.metrics_writer import read_metrics

DONE_FILE = "ablation.json"
KEEP_ALL_CHECKPOINTS = 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class AblationRow:
    """One row: a name (a directory name), its gin files and its extra bindings.

    Attributes:
        name: the row's name and its runs' directory name.
        gin_files: the row's gin files (before the ablation's common ones).
        bindings: extra gin bindings of the row.
        init_from: an earlier row whose last checkpoint initialises this row's parameters
            (``TrainConfig.init_checkpoint``, same seed); empty: the row trains from scratch or
            branches (``AblationConfig.branch_step``).
        description: what the row adds, one line for the summary's legend (empty: none).
    """

    name: str
    gin_files: Sequence[str]
    bindings: Sequence[str] = ()
    init_from: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"AblationRow.name must be letters, digits, '_' or '-', got {self.name!r}")
        if self.init_from == self.name:
            raise ValueError(f"AblationRow {self.name!r}: init_from names the row itself")
        if not self.gin_files:
            raise ValueError(f"AblationRow {self.name!r} needs at least one gin file")
        object.__setattr__(self, "gin_files", tuple(self.gin_files))
        object.__setattr__(self, "bindings", tuple(self.bindings))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AblationProbe:
    """A further evaluation of finished runs: ``onesearch eval`` with extra bindings.

    Attributes:
        name: the probe's name; its reports go to ``<run>/eval_<name>/``.
        bindings: gin bindings added to the row's evaluation (e.g.
            ``EvalConfig.input_field='teacher_inputs'``).
        rows: the rows it applies to (empty: every row).
    """

    name: str
    bindings: Sequence[str]
    rows: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"AblationProbe.name must be letters, digits or '_', got {self.name!r}")
        if not self.bindings:
            raise ValueError(f"AblationProbe {self.name!r} needs at least one binding (else it is the evaluation)")
        if any(b.split("=", 1)[0].strip() == "EvalConfig.output_dir" for b in self.bindings):
            raise ValueError(f"AblationProbe {self.name!r}: EvalConfig.output_dir is set by the driver (eval_<name>)")
        object.__setattr__(self, "bindings", tuple(self.bindings))
        object.__setattr__(self, "rows", tuple(self.rows))

    def applies_to(self, row: AblationRow) -> bool:
        return not self.rows or row.name in self.rows

    @property
    def eval_dir(self) -> str:
        """The directory name of its reports inside a run."""
        return f"eval_{self.name}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AblationConfig:
    """An ablation: rows, seeds and where they run.

    Attributes:
        root: directory of the runs and the summary.
        rows: the rows, baseline first.
        seeds: seeds run for every row.
        common_gin_files: gin files added after each row's own (e.g. the model size).
        common_bindings: gin bindings added to every train and eval command before the row's own
            (e.g. ``EXAMPLES_DIR='...'``).
        eval_gin_files: gin files added for the evaluation (``gin/runs/eval.gin``).
        branch_step: rows after the first that have no ``init_from`` start from the first row's
            checkpoint at this step (0: they train from scratch).
        k: the K of the summary's HR@K and MRR@K (one of the evaluation's ``ks``).
        probes: further evaluations of each finished run (:class:`AblationProbe`).
        progress_bar: show each training run's progress bar (``TrainConfig.progress_bar``).
    """

    root: str
    rows: Sequence[AblationRow]
    seeds: Sequence[int] = (0, 1, 2)
    common_gin_files: Sequence[str] = ("gin/models/tiny.gin",)
    common_bindings: Sequence[str] = ()
    eval_gin_files: Sequence[str] = ("gin/runs/eval.gin",)
    branch_step: int = 0
    k: int = 10
    probes: Sequence[AblationProbe] = ()
    progress_bar: bool = False

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
        for index, row in enumerate(self.rows):
            if row.init_from and row.init_from not in names[:index]:
                raise ValueError(f"AblationRow {row.name!r}: init_from {row.init_from!r} is not an earlier row of "
                                 f"the ablation (rows: {names})")  # fmt: skip
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"AblationConfig.k must be an int >= 1, got {self.k!r}")
        probe_names = [probe.name for probe in self.probes]
        if len(set(probe_names)) != len(probe_names):
            raise ValueError(f"AblationConfig.probes has repeated names: {probe_names}")
        for probe in self.probes:
            unknown = sorted(set(probe.rows) - set(names))
            if unknown:
                raise ValueError(f"AblationProbe {probe.name!r} names rows that are not in the ablation: {unknown}")
        for name in ("rows", "seeds", "common_gin_files", "common_bindings", "eval_gin_files", "probes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def run_dir(self, seed: int, row: AblationRow) -> Path:
        """``root/seed<S>/<row>``: the run's ``MODEL_DIR``."""
        return Path(self.root) / f"seed{seed}" / row.name

    def row(self, name: str) -> AblationRow:
        """The row called ``name``."""
        return next(row for row in self.rows if row.name == name)

    def branches(self, row: AblationRow) -> bool:
        """Whether ``row`` starts from the first row's checkpoint at ``branch_step``."""
        return bool(self.branch_step) and row != self.rows[0] and not row.init_from


def _gin_args(files: Sequence[str], bindings: Sequence[str]) -> list[str]:
    return [f"--gin_file={f}" for f in files] + [f"--gin.{b}" for b in bindings]


def train_command(config: AblationConfig, seed: int, row: AblationRow) -> list[str]:
    """The ``onesearch train`` command line of one run."""
    bindings = [
        *config.common_bindings,
        f"MODEL_DIR='{config.run_dir(seed, row)}'",
        f"TrainConfig.seed={seed}",
        f"TrainConfig.data_seed={seed}",
        f"TrainConfig.progress_bar={config.progress_bar}",
        *row.bindings,
    ]
    if config.branch_step and row == config.rows[0]:
        bindings.append(f"CheckpointConfig.keep_last={KEEP_ALL_CHECKPOINTS}")
    if row.init_from:
        source = config.run_dir(seed, config.row(row.init_from)) / "checkpoints"
        bindings.append(f"TrainConfig.init_checkpoint='{source}'")
    return ["onesearch", "train", *_gin_args((*row.gin_files, *config.common_gin_files), bindings)]


def eval_command(config: AblationConfig, seed: int, row: AblationRow) -> list[str]:
    """The ``onesearch eval`` command line of one run (its latest checkpoint)."""
    files = (*row.gin_files, *config.eval_gin_files, *config.common_gin_files)
    bindings = [*config.common_bindings, f"MODEL_DIR='{config.run_dir(seed, row)}'", *row.bindings]
    return ["onesearch", "eval", *_gin_args(files, bindings)]


def probe_command(config: AblationConfig, seed: int, row: AblationRow, probe: AblationProbe, step: int) -> list[str]:
    """The ``onesearch eval`` command line of one probe of one run's ``step``: the row's, plus the probe's bindings."""
    output_dir = config.run_dir(seed, row) / probe.eval_dir
    bindings = (*probe.bindings, f"EvalConfig.output_dir='{output_dir}'")
    return [*eval_command(config, seed, row), *_gin_args((), bindings), f"--step={step}"]


def branch(config: AblationConfig, seed: int, row: AblationRow) -> Path | None:
    """Copies the first row's ``branch_step`` checkpoint into ``row``'s checkpoints (once).

    Returns:
        The copied step directory, or None when there is nothing to copy (the row does not branch,
        see :meth:`AblationConfig.branches`, or the run has checkpoints already).

    Raises:
        FileNotFoundError: the first row has no checkpoint at ``branch_step``.
    """
    if not config.branches(row):
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


def latest_metrics(run_dir: Path, eval_dir: str = "eval") -> tuple[int, dict[str, Any]]:
    """``(step, metrics.json)`` of the latest evaluated step under ``run_dir/eval_dir``.

    Raises:
        FileNotFoundError: nothing was evaluated there.
    """
    steps = sorted(
        int(p.name.removeprefix("step_"))
        for p in (run_dir / eval_dir).glob("step_*")
        if (p / "metrics.json").is_file() and p.name.removeprefix("step_").isdigit()
    )
    if not steps:
        raise FileNotFoundError(f"{run_dir / eval_dir}: no evaluated step (step_<N>/metrics.json)")
    with open(run_dir / eval_dir / f"step_{steps[-1]}" / "metrics.json") as f:
        return steps[-1], json.load(f)


def run_ablation(config: AblationConfig, *, runner: Runner = run_onesearch) -> list[Path]:
    """Trains and evaluates every (seed, row) not done yet, seed by seed, rows in order, then its probes.

    A probe runs once per finished run: when ``<run>/eval_<probe>/`` holds the step that the run's
    evaluation reported.

    Returns:
        The run directories and probe directories finished by this call.
    """
    finished = []
    runs = [(seed, index, row) for seed in config.seeds for index, row in enumerate(config.rows)]
    for number, (seed, index, row) in enumerate(runs, 1):
        run_dir = config.run_dir(seed, row)
        where = f"ablation run {number}/{len(runs)}, seed {seed}, row {index + 1}/{len(config.rows)} {row.name!r}"
        if (run_dir / DONE_FILE).is_file():
            print(f"{where}: done before, skipped ({run_dir / DONE_FILE})", flush=True)
        else:
            start = time.monotonic()
            print(f"{where}: training into {run_dir}", flush=True)
            branch(config, seed, row)
            train = train_command(config, seed, row)
            runner(train)
            step = check_trained(run_dir)
            print(f"{where}: trained to step {step}; evaluating it", flush=True)
            runner(eval_command(config, seed, row))
            step, _ = latest_metrics(run_dir)
            record = {"row": row.name, "seed": seed, "eval_step": step, "train": train}
            (run_dir / DONE_FILE).write_text(json.dumps(record, indent=2) + "\n")
            finished.append(run_dir)
            print(f"{where}: done in {duration(time.monotonic() - start)}", flush=True)
        step = json.loads((run_dir / DONE_FILE).read_text())["eval_step"]
        for probe in config.probes:
            if probe.applies_to(row) and not (run_dir / probe.eval_dir / f"step_{step}" / "metrics.json").is_file():
                print(f"{where}: probe {probe.name!r} evaluates step {step}", flush=True)
                runner(probe_command(config, seed, row, probe, step))
                probed, _ = latest_metrics(run_dir, probe.eval_dir)
                if probed != step:
                    raise RuntimeError(f"{run_dir / probe.eval_dir}: the probe evaluated step {probed}, not the "
                                       f"run's evaluated step {step}")  # fmt: skip
                finished.append(run_dir / probe.eval_dir)
    return finished


def _mean_std(values: Sequence[float | None]) -> dict[str, float]:
    """Mean, sample std and count of the values that are defined (an evaluation reports a metric with
    no session to average over, e.g. order HR@K of a segment without an order, as None); NaN when none is."""
    defined = [v for v in values if v is not None and not math.isnan(v)]
    if not defined:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {
        "mean": statistics.fmean(defined),
        "std": statistics.stdev(defined) if len(defined) > 1 else 0.0,
        "n": len(defined),
    }


def train_teacher_gap(run_dir: Path) -> float | None:
    """Mean of ``teacher_ce - student_ce`` over the run's logged train steps that have both, or None.

    The distillation loss logs both cross-entropies at every logged step (``train/distill.py``); a
    gap near 0 means the teacher input predicts the targets no better than the student input, so
    the KL term has nothing to transfer. A step logged twice (a run resumed by an older build) counts
    once, with its last record.
    """
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    by_step = {r["step"]: r for r in read_metrics(path, "train")}
    gaps = [r["teacher_ce"] - r["student_ce"] for r in by_step.values()
            if r.get("teacher_ce") is not None and r.get("student_ce") is not None]  # fmt: skip
    return statistics.fmean(gaps) if gaps else None


def _segments(runs: Sequence[Mapping[str, Any]], k: int) -> dict[str, Any]:
    """``[family][segment]``: click and order HR@K (mean and std over ``runs``) and the segment's counts."""
    return {
        family: {
            group: {
                **{truth: _mean_std([r["segments"][family][group]["model"][truth][f"hr@{k}"] for r in runs])
                   for truth in ("click", "order")},
                "counts": _segment_counts(runs[0]["segments"][family][group]),
            }
            for group in groups
            if all(group in r["segments"].get(family, {}) for r in runs)
        }
        for family, groups in runs[0]["segments"].items()
    }  # fmt: skip


def _headline(run: Mapping[str, Any], truth: str, metric: str, k: int) -> float:
    value = run["overall"]["model"][truth][f"{metric}@{k}"]
    return math.nan if value is None else float(value)


def _validation_ce(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per teacher-forced evaluation task present in every run: mean and std of its cross-entropy."""
    names = [
        {key.split("/")[1] for key in run.get("teacher_forced", {}) if key.endswith("/cross_entropy")} for run in runs
    ]
    tasks = sorted(set.intersection(*names)) if names else []
    return {task: _mean_std([run["teacher_forced"][f"eval/{task}/cross_entropy"] for run in runs]) for task in tasks}


def _paired_delta(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], k: int) -> dict[str, Any]:
    """``[truth]["hr"|"mrr"]``: mean and std over seeds of ``a - b`` for each (a, b) of one seed."""
    return {
        truth: {m: _mean_std([_headline(a, truth, m, k) - _headline(b, truth, m, k) for a, b in pairs])
                for m in ("hr", "mrr")}
        for truth in ("click", "order")
    }  # fmt: skip


def _finished(config: AblationConfig, row: AblationRow, eval_dir: str = "eval") -> dict[int, dict[str, Any]]:
    """``{seed: metrics}`` of the finished runs of ``row`` that have an evaluation in ``eval_dir``."""
    runs = {}
    for seed in config.seeds:
        run_dir = config.run_dir(seed, row)
        if (run_dir / DONE_FILE).is_file():
            try:
                runs[seed] = latest_metrics(run_dir, eval_dir)[1]
            except FileNotFoundError:  # not probed (yet)
                continue
    return runs


def _stats(runs: Sequence[Mapping[str, Any]], k: int) -> dict[str, Any]:
    """Seeds, headline metrics, validation CE, segments and (when evaluated) the valid-SID rate of
    unconstrained top-1 decoding of one row's runs (mean and std over them)."""
    overall = {
        truth: {m: _mean_std([_headline(r, truth, m, k) for r in runs]) for m in ("hr", "mrr")}
        for truth in ("click", "order")
    }
    stats = {"seeds": len(runs), "overall": overall, "validation_ce": _validation_ce(runs),
             "segments": _segments(runs, k)}  # fmt: skip
    if all(run.get("valid_sid_rate") for run in runs):
        stats["valid_sid_top1"] = _mean_std([float(run["valid_sid_rate"]["top1"]) for run in runs])
    return stats


def summarise_ablation(config: AblationConfig) -> dict[str, Any]:
    """Mean and sample std over the finished seeds of each row's headline metrics and segments.

    Per row: ``overall[truth][metric]`` for truth click/order and metric ``hr``/``mrr`` (@K);
    ``description`` (when the row has one); ``delta[truth][metric]``, the difference from the
    baseline (first) row of the same seed, over the seeds where both are finished (absent for the
    baseline); ``validation_ce[task]``, the teacher-forced cross-entropy of each evaluation task;
    ``segments[family][segment][truth]`` = HR@K with ``segments[family][segment]["counts"]`` = the
    segment's test sessions and those with a click and with an order (the test split is the same
    for every seed). Per probe and row: ``overall``, ``validation_ce`` and ``delta`` (the probe
    minus the row's own evaluation, per seed). ``train_teacher_gap``: :func:`train_teacher_gap`
    over seeds, for rows that log both cross-entropies. Rows with no finished seed are left out.
    """
    k = config.k
    rows: dict[str, Any] = {}
    evaluated = {row.name: _finished(config, row) for row in config.rows}
    baseline = evaluated[config.rows[0].name]
    for row in config.rows:
        by_seed = evaluated[row.name]
        runs = list(by_seed.values())
        if not runs:
            continue
        rows[row.name] = _stats(runs, k)
        if row.description:
            rows[row.name]["description"] = row.description
        gaps = [gap for seed in by_seed if (gap := train_teacher_gap(config.run_dir(seed, row))) is not None]
        if gaps:
            rows[row.name]["train_teacher_gap"] = _mean_std(gaps)
        paired = [(by_seed[s], baseline[s]) for s in by_seed if s in baseline]
        if row != config.rows[0] and paired:
            rows[row.name]["delta"] = {"seeds": len(paired), **_paired_delta(paired, k)}
    probes: dict[str, Any] = {}
    for probe in config.probes:
        probes[probe.name] = {"bindings": list(probe.bindings), "rows": {}, "bm25": None}
        for row in config.rows:
            probed = _finished(config, row, probe.eval_dir) if probe.applies_to(row) else {}
            if not probed:
                continue
            runs = list(probed.values())
            probes[probe.name]["bm25"] = probes[probe.name]["bm25"] or _bm25(runs[0], k)
            probes[probe.name]["rows"][row.name] = {
                **_stats(runs, k),
                "delta": _paired_delta([(probed[s], evaluated[row.name][s]) for s in probed], k),
            }
    first = next((runs[s] for runs in evaluated.values() for s in runs), None)
    return {"k": k, "rows": rows, "bm25": _bm25(first, k) if first else None, "probes": probes}


def _bm25(run: Mapping[str, Any], k: int) -> dict[str, float] | None:
    """``{truth: HR@K}`` of the BM25 baseline an evaluation reported beside the model (the same for every seed)."""
    if "bm25" not in run.get("overall", {}):
        return None
    return {truth: float(run["overall"]["bm25"][truth][f"hr@{k}"]) for truth in ("click", "order")}


def _bm25_line(bm25: Mapping[str, float] | None, k: int, what: str) -> list[str]:
    if not bm25:
        return []
    return ["", f"BM25 over item titles ({what}): click HR@{k} {bm25['click']:.4f}, order HR@{k} {bm25['order']:.4f}."]


def _segment_counts(segment: Mapping[str, Any]) -> dict[str, int]:
    """``{"sessions", "click", "order"}``: a segment's test sessions and those with each truth."""
    return {
        "sessions": int(segment["sessions"]),
        **{truth: int(segment["model"][truth]["queries"]) for truth in ("click", "order")},
    }


def _cell(stat: Mapping[str, float], signed: bool = False) -> str:
    """``mean ± std``, or the value alone when it comes from one seed."""
    if math.isnan(stat["mean"]):
        return "n/a"
    mean = f"{stat['mean']:+.4f}" if signed else f"{stat['mean']:.4f}"
    return mean if stat.get("n", 2) == 1 else f"{mean} ± {stat['std']:.4f}"


def _ce_tasks(rows: Mapping[str, Any]) -> list[str]:
    return sorted({task for row in rows.values() for task in row["validation_ce"]})


def headline_markdown(summary: Mapping[str, Any]) -> str:
    """The headline table of the summary (with BM25 beside) and the probes' tables, as Markdown."""
    k, rows = summary["k"], summary["rows"]
    tasks = _ce_tasks(rows)
    heads = [f"{t} {m.upper()}@{k}" for t in ("click", "order") for m in ("hr", "mrr")]
    heads += [f"{t} HR@{k} - baseline" for t in ("click", "order")] + [f"CE {task}" for task in tasks]
    valid = any("valid_sid_top1" in row for row in rows.values())
    heads += ["valid-SID top-1"] if valid else []
    gap = any("train_teacher_gap" in row for row in rows.values())
    heads += ["teacher_ce - student_ce (train)"] if gap else []
    spread = ("One seed per row" if all(row["seeds"] == 1 for row in rows.values())
              else "Mean ± sample std over seeds")  # fmt: skip
    lines = [
        f"{spread}; '- baseline' is the difference from the first row of the same seed (paired). "
        "CE: teacher-forced cross-entropy on the validation split; valid-SID top-1: the share of unconstrained "
        "top-1 SIDs that are items; teacher_ce - student_ce: the mean gap over the logged train steps of a "
        "distillation run.",
        "",
        "| row | seeds | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * len(heads),
    ]
    for name, row in rows.items():
        cells = [_cell(row["overall"][t][m]) for t in ("click", "order") for m in ("hr", "mrr")]
        cells += [_cell(row["delta"][t]["hr"], signed=True) if "delta" in row else "-" for t in ("click", "order")]
        cells += [_cell(row["validation_ce"][task]) if task in row["validation_ce"] else "n/a" for task in tasks]
        if valid:
            cells.append(_cell(row["valid_sid_top1"]) if "valid_sid_top1" in row else "n/a")
        if gap:
            cells.append(_cell(row["train_teacher_gap"], signed=True) if "train_teacher_gap" in row else "-")
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cells) + " |")
    lines += _bm25_line(summary.get("bm25"), k, "the same queries")
    legend = [f"- {name}: {row['description']}" for name, row in rows.items() if row.get("description")]
    lines += ["", "Rows:", *legend] if legend else []
    for probe_name, probe in summary.get("probes", {}).items():
        if not probe["rows"]:
            continue
        probe_tasks = _ce_tasks(probe["rows"])
        heads = [f"{t} HR@{k}" for t in ("click", "order")] + [f"{t} HR@{k} - own eval" for t in ("click", "order")]
        heads += [f"CE {task}" for task in probe_tasks]
        lines += ["", f"Probe `{probe_name}` ({', '.join(probe['bindings'])}); '- own eval' is the difference from "
                  "the row's own evaluation of the same seed.", ""]  # fmt: skip
        lines += ["| row | seeds | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
        for name, row in probe["rows"].items():
            cells = [_cell(row["overall"][t]["hr"]) for t in ("click", "order")]
            cells += [_cell(row["delta"][t]["hr"], signed=True) for t in ("click", "order")]
            cells += [_cell(row["validation_ce"][task]) if task in row["validation_ce"] else "n/a"
                      for task in probe_tasks]  # fmt: skip
            lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cells) + " |")
        lines += _bm25_line(probe.get("bm25"), k, f"the same queries, probe `{probe_name}`")
    return "\n".join(lines) + "\n"


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as Markdown: :func:`headline_markdown`, then click and order HR@K per segment."""
    lines = _segment_tables(summary["rows"], summary["k"], "")
    for probe_name, probe in summary.get("probes", {}).items():
        lines += _segment_tables(probe["rows"], summary["k"], f"probe `{probe_name}`: ")
    return headline_markdown(summary) + "".join(line + "\n" for line in lines)


def _segment_tables(rows: Mapping[str, Any], k: int, title: str) -> list[str]:
    """One Markdown table per segment family: click / order HR@K of each row, the counts on top."""
    if not rows:
        return []
    lines: list[str] = []
    first = next(iter(rows.values()))
    for family, groups in first["segments"].items():
        lines += ["", f"{title}HR@{k} by {family.replace('_', ' ')} (click / order, mean ± std over seeds; under each "
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
    return lines


def write_summary(config: AblationConfig) -> Path:
    """Writes ``root/summary.json`` and ``root/summary.md``; returns the Markdown file."""
    summary = summarise_ablation(config)
    root = Path(config.root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    path = root / "summary.md"
    path.write_text(summary_markdown(summary))
    return path

"""The end-to-end demo (``onesearch demo``, ``make demo``): every stage of the pipeline on one world.

Stages, each an ``onesearch`` command (:mod:`onesearch_jax.pipeline.stages` skips those whose
outputs are up to date):

1. ``world``: the synthetic e-commerce world in the KuaiSearch layout, validated, with statistics.
2. ``keywords``: the keyword repository (attributes, intents, the keyword chain of thought per query).
3. ``sids``: the SID codebook (keyword-fused embeddings, residual k-means + OPQ, collisions) and its
   coverage report, beside the codebook built without keyword fusion.
4. ``examples``: the training records of every stage and the SentencePiece + SID vocabulary.
5. ``ablation``: ``onesearch ablation`` with :attr:`DemoConfig.ablation_gin`: the V1-style SFT
   baseline, then each OneSearch-V2 component on top of the row before it (SFT + LR-ESD branched
   after stage 2, then TPMA-GRPO from the LR-ESD policy), each trained and evaluated on the test
   split; interrupted runs resume.

Then it prints the ablation's table and where the plots, reports and checkpoints are.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from onesearch_jax.evaluate.ablation import headline_markdown, latest_metrics
from onesearch_jax.pipeline.stages import Stage, StageResult, duration


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """The demo's gin files, one per stage.

    Attributes:
        world_gin: WorldConfig of the world (``gin/world/default.gin``: the embedded default world).
        understanding_gin: the keyword job's configuration.
        sid_gin: the SID build's configuration.
        examples_gin: the training records' configuration.
        ablation_gin: the rows trained and evaluated (``gin/demo/ablation.gin``: short runs that fit
            the demo's time); its ``AblationConfig.root`` and ``common_bindings`` are set by the demo
            (the runs go to ``OUTPUT_DIR/runs`` and read ``OUTPUT_DIR``'s records).
    """

    world_gin: str = "gin/world/default.gin"
    understanding_gin: str = "gin/understanding/default.gin"
    sid_gin: str = "gin/sid/default.gin"
    examples_gin: str = "gin/examples/default.gin"
    ablation_gin: str = "gin/demo/ablation.gin"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, str) or not value.endswith(".gin"):
                raise ValueError(f"DemoConfig.{field.name} must be a .gin file, got {value!r}")


@dataclasses.dataclass(frozen=True)
class DemoPaths:
    """Where the demo writes each stage's outputs under ``root``."""

    root: Path

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def keywords(self) -> Path:
        return self.root / "keywords.jsonl"

    @property
    def sids(self) -> Path:
        return self.root / "sids"

    @property
    def vocab(self) -> Path:
        return self.root / "sids" / "vocab"

    @property
    def examples(self) -> Path:
        return self.root / "examples"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def stamps(self) -> Path:
        return self.root / "stamps"


def demo_stages(config: DemoConfig, paths: DemoPaths) -> list[Stage]:
    """The demo's stages, in data-flow order."""
    bindings = json.dumps([f"EXAMPLES_DIR='{paths.examples}'", f"VOCAB_DIR='{paths.vocab}'"])
    return [
        Stage(name="world", title="generate the synthetic world (KuaiSearch files), validate it, print statistics",
              command=["onesearch", "world", f"--output_dir={paths.world}", f"--gin_file={config.world_gin}"],
              outputs=[str(paths.world)]),
        Stage(name="keywords", title="build the keyword repository (attributes, intents, keyword chain of thought)",
              command=["onesearch", "keywords", str(paths.world), str(paths.keywords),
                       f"--gin_file={config.understanding_gin}"],
              outputs=[str(paths.keywords)]),
        Stage(name="sids", title="build the SID codebook and trie, compare keyword fusion on and off",
              command=["onesearch", "build-sids", str(paths.world), str(paths.sids), f"--gin_file={config.sid_gin}",
                       "--compare"],
              outputs=[str(paths.sids)]),
        Stage(name="examples", title="write the training records of every stage and train the vocabulary",
              command=["onesearch", "data", "build-examples", str(paths.world), str(paths.examples),
                       f"--sids={paths.sids}", f"--keywords={paths.keywords}", f"--gin_file={config.examples_gin}"],
              outputs=[str(paths.examples), str(paths.vocab)]),
        Stage(name="ablation", title="train and evaluate the V1-style SFT baseline and each V2 component",
              command=["onesearch", "ablation", f"--gin_file={config.ablation_gin}",
                       f"--gin.AblationConfig.root='{paths.runs}'", f"--gin.AblationConfig.common_bindings={bindings}"],
              outputs=[str(paths.runs), str(paths.runs / "summary.json")], resumable=True),
    ]  # fmt: skip


def _latest_eval(run_dir: Path) -> Path | None:
    """``run_dir/eval/step_<N>`` of the run's latest evaluated step, or None."""
    try:
        return run_dir / "eval" / f"step_{latest_metrics(run_dir)[0]}"
    except FileNotFoundError:
        return None


def demo_report(paths: DemoPaths, results: list[StageResult], seconds: float) -> str:
    """The closing report: the time taken, the ablation table and where every output is."""
    summary = json.loads((paths.runs / "summary.json").read_text())
    ran = [r.name for r in results if r.ran]
    lines = [
        f"onesearch demo: finished in {duration(seconds)} "
        f"(ran: {', '.join(ran) or 'nothing'}; up to date: {', '.join(r.name for r in results if not r.ran) or '-'})",
        "",
        "Ablation (test split; each row adds one OneSearch-V2 component to the row before it):",
        "",
        headline_markdown(summary).rstrip(),
        "",
        "Where things are:",
        f"  world (KuaiSearch files, hidden truth) {paths.world}",
        f"  keyword repository                     {paths.keywords}",
        f"  SID codebook                           {paths.sids}",
        f"  training records, vocabulary           {paths.examples}, {paths.vocab}",
    ]
    seeds = sorted((p for p in paths.runs.glob("seed*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:]))
    for run_dir in (seed / row for seed in seeds for row in summary["rows"] if (seed / row).is_dir()):
        label = f"{run_dir.parent.name}/{run_dir.name}"
        lines.append(f"  {label + ' checkpoints':38} {run_dir / 'checkpoints'}")
        step_dir = _latest_eval(run_dir)
        if step_dir is not None:
            plots = ", ".join(p.name for p in sorted(step_dir.glob("*.png")))
            lines.append(f"  {label + ' report and plots':38} {step_dir} (metrics.md{', ' + plots if plots else ''})")
    lines += [
        f"  the table with every segment           {paths.runs / 'summary.md'}",
        f"  training curves                        tensorboard --logdir {paths.runs}",
    ]
    return "\n".join(lines) + "\n"

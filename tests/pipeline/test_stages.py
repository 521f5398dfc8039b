"""The pipeline runner: stamps, fingerprints over gin files, skipping, cleaning and resuming.

The runner is injected: a fake ``onesearch`` that writes each stage's outputs (and records what it
ran), so that the up-to-date logic is tested without running the jobs; the real demo is
``make demo`` (README, "The end-to-end demo").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onesearch_jax.pipeline.stages import Stage, fingerprint, gin_closure, run_pipeline


class FakeOnesearch:
    """Writes the ``--out=`` file of each command (its contents: the command); can fail once on a stage."""

    def __init__(self, fail_on: str | None = None):
        self.ran: list[str] = []
        self.fail_on = fail_on

    def __call__(self, command) -> None:
        name = command[1]
        self.ran.append(name)
        if name == self.fail_on:
            self.fail_on = None
            raise RuntimeError(f"{name} was interrupted")
        out = Path(next(a for a in command if a.startswith("--out=")).removeprefix("--out="))
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(" ".join(command) + "\n")


def _stages(tmp_path: Path, resumable: str = "") -> list[Stage]:
    return [
        Stage(name=name, title=f"make {name}", command=["onesearch", name, f"--out={tmp_path / 'out' / name}",
                                                          f"--gin_file={tmp_path / (name + '.gin')}"],
              outputs=[str(tmp_path / "out" / name)], resumable=name == resumable)
        for name in ("world", "sids", "train")
    ]  # fmt: skip


@pytest.fixture
def gin_files(tmp_path):
    (tmp_path / "common.gin").write_text("X.a = 1\n")
    (tmp_path / "world.gin").write_text("W.n = 10\n")
    (tmp_path / "sids.gin").write_text(f"include '{tmp_path / 'common.gin'}'\n")
    (tmp_path / "train.gin").write_text("T.steps = 5\n")
    return tmp_path


def test_a_second_run_skips_every_stage_and_says_so(gin_files, tmp_path, capsys):
    fake = FakeOnesearch()
    results = run_pipeline(_stages(tmp_path), tmp_path / "stamps", runner=fake)
    assert fake.ran == ["world", "sids", "train"] and all(r.ran for r in results)
    stamp = json.loads((tmp_path / "stamps" / "sids.json").read_text())
    assert stamp["status"] == "done" and stamp["command"][1] == "sids" and stamp["seconds"] >= 0
    out = capsys.readouterr().out
    assert "[1/3] world: make world" in out and "[3/3] train: done in 0 s" in out
    again = FakeOnesearch()
    results = run_pipeline(_stages(tmp_path), tmp_path / "stamps", runner=again)
    assert again.ran == [] and not any(r.ran for r in results)
    assert "[2/3] sids: up to date, skipped (ran " in capsys.readouterr().out


def test_a_changed_gin_file_reruns_its_stage_and_every_later_one_from_clean_outputs(gin_files, tmp_path):
    run_pipeline(_stages(tmp_path), tmp_path / "stamps", runner=FakeOnesearch())
    (tmp_path / "common.gin").write_text("X.a = 2\n")  # included by sids.gin only
    fake = FakeOnesearch()
    run_pipeline(_stages(tmp_path), tmp_path / "stamps", runner=fake)
    assert fake.ran == ["sids", "train"]
    # the outputs were removed before the stage ran again: one line each, not two
    assert len((tmp_path / "out" / "train").read_text().splitlines()) == 1
    assert len((tmp_path / "out" / "world").read_text().splitlines()) == 1


def test_a_changed_command_or_a_missing_output_reruns_the_stage_and_those_after_it(gin_files, tmp_path):
    run_pipeline(_stages(tmp_path), tmp_path / "stamps", runner=FakeOnesearch())
    (tmp_path / "out" / "train").unlink()
    fake = FakeOnesearch()
    run_pipeline(_stages(tmp_path), tmp_path / "stamps", runner=fake)
    assert fake.ran == ["train"]
    (tmp_path / "out" / "world").unlink()  # made again: what was built from it is out of date
    fake = FakeOnesearch()
    run_pipeline(_stages(tmp_path), tmp_path / "stamps", runner=fake)
    assert fake.ran == ["world", "sids", "train"]
    stages = _stages(tmp_path)
    stages[1] = Stage(name="sids", title="x", command=[*stages[1].command, "--compare"], outputs=stages[1].outputs)
    fake = FakeOnesearch()
    run_pipeline(stages, tmp_path / "stamps", runner=fake)
    assert fake.ran == ["sids", "train"]


def test_after_a_failure_a_rerun_starts_at_the_failed_stage(gin_files, tmp_path, capsys):
    with pytest.raises(RuntimeError, match="sids was interrupted"):
        run_pipeline(_stages(tmp_path), tmp_path / "stamps", runner=FakeOnesearch(fail_on="sids"))
    assert "[2/3] sids: failed after 0 s" in capsys.readouterr().out
    assert json.loads((tmp_path / "stamps" / "sids.json").read_text())["status"] == "running"
    fake = FakeOnesearch()
    run_pipeline(_stages(tmp_path), tmp_path / "stamps", runner=fake)
    assert fake.ran == ["sids", "train"]


def test_a_resumable_stage_keeps_the_outputs_of_an_interrupted_attempt_with_the_same_fingerprint(gin_files, tmp_path):
    fake = FakeOnesearch(fail_on="train")
    with pytest.raises(RuntimeError):
        run_pipeline(_stages(tmp_path, resumable="train"), tmp_path / "stamps", runner=fake)
    partial = tmp_path / "out" / "train"
    partial.write_text("checkpoint of the interrupted attempt\n")
    run_pipeline(_stages(tmp_path, resumable="train"), tmp_path / "stamps", runner=FakeOnesearch())
    assert partial.read_text().splitlines()[0] == "checkpoint of the interrupted attempt"  # resumed over it
    # a changed configuration does not resume: the partial outputs are removed first
    partial.write_text("stale\n")
    (tmp_path / "stamps" / "train.json").write_text(
        json.dumps({**json.loads((tmp_path / "stamps" / "train.json").read_text()), "status": "running"})
    )
    (tmp_path / "train.gin").write_text("T.steps = 6\n")
    run_pipeline(_stages(tmp_path, resumable="train"), tmp_path / "stamps", runner=FakeOnesearch())
    assert "stale" not in partial.read_text()


def test_a_stage_that_writes_nothing_is_an_error(gin_files, tmp_path):
    with pytest.raises(RuntimeError, match=r"stage 'world' finished without writing \[.*out/world'\]"):
        run_pipeline(_stages(tmp_path)[:1], tmp_path / "stamps", runner=lambda command: None)


def test_the_gin_closure_follows_includes_and_named_gin_files(tmp_path):
    (tmp_path / "a.gin").write_text(f"include '{tmp_path / 'b.gin'}'\nRow.gin_files = [\"{tmp_path / 'c.gin'}\"]\n")
    (tmp_path / "b.gin").write_text("B.x = 1\n")
    (tmp_path / "c.gin").write_text(f"C.y = 'not/a/file.gin'\ninclude '{tmp_path / 'a.gin'}'\n")
    closure = gin_closure([str(tmp_path / "a.gin")])
    assert sorted(Path(name).name for name in closure) == ["a.gin", "b.gin", "c.gin"]
    stage = Stage(name="s", title="t", command=["onesearch", "x", f"--gin_file={tmp_path / 'a.gin'}"], outputs=["o"])
    before = fingerprint(stage, "")
    assert fingerprint(stage, "upstream changed") != before
    (tmp_path / "c.gin").write_text("C.y = 2\n")
    assert fingerprint(stage, "") != before
    with pytest.raises(FileNotFoundError, match=r"gin file 'missing.gin': not found"):
        gin_closure(["missing.gin"])


def test_stages_are_validated():
    with pytest.raises(ValueError, match=r"Stage\.name"):
        Stage(name="a b", title="t", command=["onesearch", "x"], outputs=["o"])
    with pytest.raises(ValueError, match="must be an onesearch command line"):
        Stage(name="a", title="t", command=["python", "x"], outputs=["o"])
    with pytest.raises(ValueError, match="at least one output"):
        Stage(name="a", title="t", command=["onesearch", "x"], outputs=[])
    stage = Stage(name="a", title="t", command=["onesearch", "x"], outputs=["o"])
    with pytest.raises(ValueError, match="distinct names"):
        run_pipeline([stage, stage], "stamps", runner=lambda command: None)

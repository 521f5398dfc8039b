"""A chain of ``onesearch`` commands that reruns only what is out of date (``onesearch demo``).

Each :class:`Stage` is one command and the paths it writes. When it succeeds, its stamp
(``<stamp_dir>/<name>.json``) records its fingerprint: a SHA-256 over its command line, the
contents of the gin files it reads and the stamp of the stage before it (that stage's fingerprint
and the id of the run that made its outputs). The stages form a chain, as the data flow of
``../shared/DESIGN.md`` does (world -> keywords -> SIDs -> records -> training -> evaluation), so
a change anywhere upstream, or an upstream stage that ran again, puts every later stage out of
date. A gin file's contents include every gin file it names (``include 'x.gin'``, an ablation
row's ``gin_files``), followed recursively. The package's own code is not fingerprinted: after
changing it, delete the stamps (or ``make clean``).

A stage whose stamp matches and whose outputs all exist is skipped. Any other stage runs, after its
outputs are removed, unless it is ``resumable`` and its previous attempt (interrupted, or finished
with an output since deleted) had the same fingerprint: then it runs over them (``onesearch
ablation`` skips its finished runs and training resumes from its checkpoints), so an interrupted
pipeline loses no finished work.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from onesearch_jax.evaluate.report import write_json
from onesearch_jax.gin_utils import PROJECT_ROOT

Runner = Callable[[Sequence[str]], None]

_GIN_FILE_ARG = "--gin_file="
_NAMED_GIN_FILE = re.compile(r"""["']([^"'\s]+\.gin)["']""")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stage:
    """One command of a pipeline.

    Attributes:
        name: the stage's name (letters, digits, '_' or '-'): its stamp file and progress label.
        title: what it does, for the progress display.
        command: the ``onesearch`` command line (``["onesearch", "world", ...]``); its
            ``--gin_file=`` files are fingerprinted.
        outputs: the files and directories it writes; all must exist for it to be up to date.
        resumable: an interrupted attempt with the same fingerprint is continued over its outputs
            instead of starting afresh.
    """

    name: str
    title: str
    command: Sequence[str]
    outputs: Sequence[str]
    resumable: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"Stage.name must be letters, digits, '_' or '-', got {self.name!r}")
        if not self.command or self.command[0] != "onesearch":
            raise ValueError(f"Stage {self.name!r}: command must be an onesearch command line, got {self.command!r}")
        if not self.outputs:
            raise ValueError(f"Stage {self.name!r} must name at least one output")
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def gin_files(self) -> tuple[str, ...]:
        """The ``--gin_file`` arguments of its command."""
        return tuple(arg.removeprefix(_GIN_FILE_ARG) for arg in self.command if arg.startswith(_GIN_FILE_ARG))


def resolve_gin_file(name: str) -> Path:
    """``name`` as ``onesearch`` finds it: relative to the working directory, else to the project root.

    Raises:
        FileNotFoundError: in neither place.
    """
    for path in (Path(name), PROJECT_ROOT / name):
        if path.is_file():
            return path
    raise FileNotFoundError(f"gin file {name!r}: not found in {Path.cwd()} nor in {PROJECT_ROOT}")


def gin_closure(names: Iterable[str]) -> dict[str, bytes]:
    """``{name: contents}`` of the gin files and of every existing gin file they name, recursively."""
    contents: dict[str, bytes] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in contents:
            continue
        contents[name] = resolve_gin_file(name).read_bytes()
        for named in _NAMED_GIN_FILE.findall(contents[name].decode("utf-8", errors="replace")):
            if named not in contents and any(p.is_file() for p in (Path(named), PROJECT_ROOT / named)):
                pending.append(named)
    return contents


def fingerprint(stage: Stage, upstream: str) -> str:
    """SHA-256 of the stage's command, the contents of its gin files (closure) and ``upstream`` (the
    previous stage's fingerprint and run id)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"command": list(stage.command), "upstream": upstream}).encode())
    for name, data in sorted(gin_closure(stage.gin_files).items()):
        digest.update(f"\0{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def run_onesearch(command: Sequence[str]) -> None:
    """Runs an ``onesearch`` command line with this interpreter's ``onesearch``; raises on failure.

    Raises:
        subprocess.CalledProcessError: it exited with a non-zero status.
    """
    executable = str(Path(sys.executable).with_name(command[0]))
    print("+ " + " ".join(command), flush=True)
    subprocess.run([executable, *command[1:]], check=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageResult:
    """What :func:`run_pipeline` did with one stage: ``ran`` (or skipped) and the seconds it took."""

    name: str
    ran: bool
    seconds: float


def duration(seconds: float) -> str:
    """``"4 min 2 s"`` / ``"38 s"``."""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _read_stamp(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:  # a stamp cut short by a crash: the stage is out of date
        return {}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def run_pipeline(
    stages: Sequence[Stage], stamp_dir: str | Path, *, runner: Runner = run_onesearch
) -> list[StageResult]:
    """Runs the out-of-date stages in order, printing one progress line as each starts and ends.

    Returns:
        One :class:`StageResult` per stage.

    Raises:
        ValueError: two stages share a name.
        FileNotFoundError: a stage's gin file does not exist (before any stage runs).
        Exception: whatever the runner raised for the failing stage (its stamp stays "running";
            the stages before it keep theirs, so a rerun starts at it).
    """
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"pipeline stages must have distinct names, got {names}")
    for stage in stages:  # a missing gin file stops the pipeline before its first stage, not at its own
        gin_closure(stage.gin_files)
    Path(stamp_dir).mkdir(parents=True, exist_ok=True)
    results = []
    upstream = ""
    for number, stage in enumerate(stages, 1):
        label = f"[{number}/{len(stages)}] {stage.name}"
        stamp_path = Path(stamp_dir) / f"{stage.name}.json"
        stamp = _read_stamp(stamp_path)
        current = fingerprint(stage, upstream)
        outputs = [Path(p) for p in stage.outputs]
        done = stamp.get("fingerprint") == current and stamp.get("status") == "done" and "run_id" in stamp
        if done and all(p.exists() for p in outputs):
            print(f"{label}: up to date, skipped (ran {stamp['finished']} in {duration(stamp['seconds'])})", flush=True)
            results.append(StageResult(name=stage.name, ran=False, seconds=0.0))
            upstream = f"{current}:{stamp['run_id']}"
            continue
        resume = stage.resumable and stamp.get("fingerprint") == current  # interrupted, or an output deleted
        if not resume:
            for path in outputs:
                _remove(path)
        print(f"{label}: {stage.title}{' (resuming)' if resume else ''}", flush=True)
        record = {"stage": stage.name, "fingerprint": current, "command": list(stage.command), "status": "running"}
        write_json(stamp_path, record)
        start = time.monotonic()
        try:
            runner(stage.command)
        except BaseException:
            print(f"{label}: failed after {duration(time.monotonic() - start)}", flush=True)
            raise
        missing = [str(p) for p in outputs if not p.exists()]
        if missing:
            raise RuntimeError(f"stage {stage.name!r} finished without writing {missing}")
        seconds = time.monotonic() - start
        finished = datetime.datetime.now().isoformat(timespec="seconds")
        run_id = uuid.uuid4().hex
        write_json(stamp_path, {**record, "status": "done", "finished": finished, "seconds": seconds,
                                "run_id": run_id})  # fmt: skip
        print(f"{label}: done in {duration(seconds)}", flush=True)
        results.append(StageResult(name=stage.name, ran=True, seconds=seconds))
        upstream = f"{current}:{run_id}"
    return results

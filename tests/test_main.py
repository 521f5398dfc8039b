"""The onesearch command line: subcommands, gin flags, exit codes and error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from onesearch_jax.gin_utils import rewrite_gin_args


def onesearch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onesearch_jax.main", *args], capture_output=True, text=True)


def test_gin_shorthand_is_rewritten_like_t5x():
    assert rewrite_gin_args(["prog", "--gin.WorldConfig.seed=3", "--gin_file=a.gin"]) == [
        "prog", "--gin_bindings=WorldConfig.seed = 3", "--gin_file=a.gin",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"must look like --gin\.NAME=VALUE"):
        rewrite_gin_args(["--gin.WorldConfig.seed"])


def test_world_command_with_gin_file_and_overrides(tmp_path):
    run = onesearch(
        "world", f"--output_dir={tmp_path}", "--gin_file=gin/world/default.gin",
        "--gin.WorldConfig.num_items=300", "--gin.WorldConfig.num_sessions=400", "--gin.WorldConfig.num_users=50",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "result: VALID" in run.stdout
    assert "rows/s" in run.stdout
    config = json.loads((tmp_path / "truth/world.json").read_text())["config"]
    assert (config["num_items"], config["num_sessions"], config["num_days"]) == (300, 400, 30)


def test_validate_reports_and_exits_1_on_invalid_data(tmp_path, kuaisearch_demo):
    run = onesearch("data", "validate", str(kuaisearch_demo), f"--report_json={tmp_path / 'r.json'}")
    assert run.returncode == 1
    assert "recall.jsonl:1: field 'user_id': id 1 not in users.jsonl" in run.stdout
    assert json.loads((tmp_path / "r.json").read_text())["problems_by_kind"] == {"dangling_id": 400}
    assert onesearch("data", "validate", str(kuaisearch_demo), "--nocheck_references").returncode == 0
    skipping = onesearch("data", "validate", str(kuaisearch_demo), "--skip_invalid")
    assert skipping.returncode == 0 and "VALID after skipping 400 invalid records" in skipping.stdout


def test_import_relevance_command(tmp_path, crowdflower_zip):
    run = onesearch(
        "data", "import-relevance", str(crowdflower_zip), str(tmp_path), "--gin.RelevanceTableConfig.click_tier=3"
    )
    assert run.returncode == 0, run.stderr
    assert "imported 10158 rows: 9708 items, 261 sessions, scale 1-4" in run.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("data", "validate", "/no/such/dir"), "error: /no/such/dir: not a directory"),
        (("world", "--output_dir=x", "--gin.WorldConfig.num_items=-1"), "num_items must be positive, got -1"),
        (("world", "--output_dir=x", "--gin.WorldConfig.colour=1"), "colour"),
        (("world", "--output_dir=x", "--gin_file=missing.gin"), "missing.gin"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, fragment):
    run = onesearch(*args)
    assert run.returncode == 2
    assert fragment in run.stderr
    assert "Traceback" not in run.stderr


def test_unknown_command_is_a_usage_error():
    run = onesearch("serve")
    assert run.returncode == 1
    assert "unknown command serve; commands: world, data validate, data import-relevance" in run.stderr

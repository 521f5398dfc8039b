"""The `onesearch keywords` job and command: repository, coverage, quality, refresh, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

from onesearch_jax.understanding.job import run_keywords_job


def test_the_job_reports_coverage_quality_and_refresh(small_world, tmp_path):
    first = run_keywords_job(small_world, tmp_path / "v1.jsonl")
    assert first.build["version"] == 1 and first.build["coverage_before"]["fraction"] == 0.0
    assert first.build["overrides"] > 0
    segment = first.quality["segment"]
    assert segment["ambiguous"]["coverage"] == 1.0 and segment["complex"]["coverage"] == 1.0
    assert segment["all"]["entity_precision"] > 0.8 and segment["all"]["entity_recall"] > 0.8
    assert "coverage of 382 test sessions: 0.0% before" in first.format()
    second = run_keywords_job(small_world, tmp_path / "v2.jsonl", refresh_from=tmp_path / "v1.jsonl")
    assert second.build["version"] == 2 and second.build["added_queries"] > 0
    before, after = second.build["coverage_before"], second.build["coverage_after"]
    assert before == first.build["coverage_after"] and after["covered"] >= before["covered"]
    header = json.loads((tmp_path / "v2.jsonl").read_text("utf-8").splitlines()[0])
    assert header["version"] == 2 and [h["version"] for h in header["history"]] == [1, 2]


def _onesearch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onesearch_jax.main", *args], capture_output=True, text=True)


def test_keywords_command(small_world, tmp_path):
    out = tmp_path / "kw.jsonl"
    run = _onesearch(
        "keywords", str(small_world), str(out), "--gin_file=gin/understanding/default.gin",
        "--gin.KeywordConfig.max_keywords=3", "--gin.KeywordJobConfig.evaluate=False",
        f"--report_json={tmp_path / 'r.json'}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "repository v1:" in run.stdout and "coverage of 382 test sessions" in run.stdout
    assert "hidden truth" not in run.stdout  # evaluation switched off through gin
    assert json.loads(out.read_text("utf-8").splitlines()[0])["max_keywords"] == 3
    assert json.loads((tmp_path / "r.json").read_text())["build"]["version"] == 1


def test_keywords_command_bad_input_names_file_and_line(small_world, tmp_path):
    lexicon = tmp_path / "bad.tsv"
    lexicon.write_text("term\ttype\nyoga mat\tentity\nred\tcolour\n", encoding="utf-8")
    run = _onesearch("keywords", str(small_world), str(tmp_path / "kw.jsonl"), f"--lexicon={lexicon}")
    assert run.returncode == 2
    assert f"error: {lexicon}:3: field 'type': unknown attribute type 'colour'" in run.stderr
    assert not (tmp_path / "kw.jsonl").exists()

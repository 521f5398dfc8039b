"""World generation throughput and memory, against plain JSON-lines serialisation of the same rows.

Each configuration runs in a fresh process so that its peak RSS is its own. The peer is the
floor any generator pays: re-serialising the rows it wrote with ``json.loads``/``json.dumps``
(measured in the same run, on the same rows), so the ratio shows the cost of the simulation.

    python bench/world_generation.py                 # default world (gin/world/default.gin)
    python bench/world_generation.py --million       # also the 1M-item world (a few minutes)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time
from onesearch_jax.configurables import ConfiguredWorld
from onesearch_jax.data.world import generate_world
from onesearch_jax.gin_utils import parse_gin
parse_gin([], [sys.argv[1]], [])
config = ConfiguredWorld()
start = time.perf_counter()
summary = generate_world(config, sys.argv[2])
seconds = time.perf_counter() - start
print(json.dumps({"rows": sum(summary.rows.values()), "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(gin_file: str, out: Path) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, gin_file, str(out)], capture_output=True, text=True, cwd=ROOT)
    if run.returncode:
        raise SystemExit(run.stderr)
    return json.loads(run.stdout.splitlines()[-1])


def json_lines_peer(kuaisearch_dir: Path) -> float:
    """Seconds to parse and re-serialise every row the generator wrote (the I/O floor)."""
    start = time.perf_counter()
    with open("/dev/null", "w", encoding="utf-8") as sink:
        for path in sorted(kuaisearch_dir.glob("*.jsonl")):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    sink.write(json.dumps(json.loads(line), ensure_ascii=False) + "\n")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--million", action="store_true", help="also generate the 1M-item world")
    args = parser.parse_args()
    configs = ["gin/world/default.gin"] + (["gin/world/million_items.gin"] if args.million else [])
    print(f"{'config':<32}{'rows':>10}{'seconds':>9}{'rows/s':>10}{'peak RSS MB':>13}{'json peer s':>13}{'ratio':>7}")
    for gin_file in configs:
        with tempfile.TemporaryDirectory() as tmp:
            r = generate(gin_file, Path(tmp))
            peer = json_lines_peer(Path(tmp) / "kuaisearch")
        print(
            f"{gin_file:<32}{r['rows']:>10}{r['seconds']:>9.1f}{r['rows'] / r['seconds']:>10,.0f}"
            f"{r['peak_rss_mb']:>13.0f}{peer:>13.1f}{r['seconds'] / peer:>7.1f}"
        )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"(ratio = generation seconds / seconds to json.loads+dumps the same rows; this process: {own} MB)")


if __name__ == "__main__":
    main()

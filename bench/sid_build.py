"""SID build time and peak memory at 100k and 1M items, against plain faiss k-means.

Data: synthetic 64-d unit vectors from a power-law Gaussian mixture (a few categories dominate,
as in e-commerce catalogues). Ours: residual k-means 1024-512-256 with the last level per parent,
OPQ 2 x 256, collision handling and the trie, i.e. everything ``build_sids`` does after embedding.
Peers, measured in the same run on the same data, each in its own process so peak RSS is its own:

* ``faiss-rq``: plain three-level residual k-means with ``faiss.Kmeans`` (1024, 512, 256 shared
  codebooks, train and assign), the textbook RQ without per-parent levels, OPQ or collisions;
* ``faiss-kmeans``: one ``faiss.Kmeans`` of 1024 centroids, train and assign.

    python bench/sid_build.py                 # 100k and 1M items (a few minutes on 2 cores)
    python bench/sid_build.py --sizes 100000  # one size
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

LEVELS = (1024, 512, 256)
DIM = 64


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2048, DIM)).astype(np.float32)
    weights = 1.0 / np.arange(1, 2049) ** 1.1
    assign = rng.choice(2048, size=n, p=weights / weights.sum())
    x = centres[assign] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def run_ours(x: np.ndarray) -> dict:
    from onesearch_jax.sid.collisions import resolve_collisions
    from onesearch_jax.sid.quantize import QuantizerConfig, ResidualQuantizer
    from onesearch_jax.sid.trie import SidTrie

    config = QuantizerConfig(level_sizes=LEVELS, opq_subcodes=2, opq_bits=8)
    quantizer = ResidualQuantizer.fit(x, config)
    codes, rotated = quantizer.encode(x)
    ids = np.arange(1, len(x) + 1)
    final, moved = resolve_collisions(codes, ids, lambda rows: quantizer.subcode_distances(rotated[rows], 1))
    trie = SidTrie.build(final, ids, config.code_sizes())
    return {"distinct_sids": trie.num_sids, "moved": moved, "trie_mb": trie.nbytes / 2**20}


def run_faiss_rq(x: np.ndarray) -> dict:
    import faiss

    residual = x.copy()
    for k in LEVELS:
        km = faiss.Kmeans(DIM, k, niter=20, seed=0, max_points_per_centroid=256)
        km.train(residual)
        _, index = km.index.search(residual, 1)
        residual -= km.centroids[index[:, 0]]
    return {}


def run_faiss_kmeans(x: np.ndarray) -> dict:
    import faiss

    km = faiss.Kmeans(DIM, LEVELS[0], niter=20, seed=0, max_points_per_centroid=256)
    km.train(x)
    km.index.search(x, 1)
    return {}


RUNNERS = {"ours": run_ours, "faiss-rq": run_faiss_rq, "faiss-kmeans": run_faiss_kmeans}


def child(what: str, n: int) -> None:
    x = synthetic(n)
    start = time.perf_counter()
    extra = RUNNERS[what](x)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, **extra}))


def measure(what: str, n: int) -> dict:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", what, "--sizes", str(n)], stdout=subprocess.PIPE, text=True
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{what} at {n} items failed (status {status})")
    result = json.loads(out.splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.sizes[0])
        return
    print(f"codebook {'-'.join(map(str, LEVELS))} + OPQ 2x256, {DIM}-d synthetic items")
    header = f"{'items':>9}  {'run':<13}{'seconds':>9}{'items/s':>11}{'peak RSS MB':>13}{'ours / peer':>13}"
    print(header)
    for n in args.sizes:
        results = {what: measure(what, n) for what in RUNNERS}
        ours = results["ours"]["seconds"]
        for what, r in results.items():
            ratio = "" if what == "ours" else f"{ours / r['seconds']:.2f}x"
            print(
                f"{n:>9}  {what:<13}{r['seconds']:>9.1f}{n / r['seconds']:>11,.0f}{r['peak_rss_mb']:>13.0f}{ratio:>13}"
            )
        o = results["ours"]
        print(f"{'':>11}{o['distinct_sids']:,} distinct SIDs, {o['moved']:,} items moved, trie {o['trie_mb']:.1f} MB")
    print("(ours / peer = our seconds over the peer's, same data, same run; each run in a fresh process)")


if __name__ == "__main__":
    main()

"""The inverted file of large vocabularies against an exhaustive scan of the same sparse rows.

Rows: ``--rows`` synthetic tf-idf rows over ``--words`` words (100,000), ``--per-row``
draws of a word each (300; the distinct ones are kept), drawn from a Zipf law
(a few frequent words, many rare ones), L2-normalized. Built with
``features.index.inverted.write_inverted`` from CSR blocks as ``features index`` builds it
from a store; queries are 200 of the rows. Peer: the exact scores of every row by one
SciPy CSR matrix-vector product and an ``argpartition``, what one would write without an
index. One thread; methods interleaved query by query; medians.

    python benchmarks/bench_inverted.py [--rows 200000] [--words 100000] [--per-row 300]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from features.index.inverted import InvertedFile, write_inverted  # noqa: E402


def zipf_rows(n, dim, per_row, seed):
    """CSR (n, dim): ``per_row`` distinct words per row, Zipf-distributed, L2-normalized."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, dim + 1) ** 0.8
    cdf = np.cumsum(p / p.sum())
    blocks = []
    for a in range(0, n, 10000):
        m = min(10000, n - a)
        words = np.minimum(np.searchsorted(cdf, rng.random((m, per_row))), dim - 1)
        words = np.sort(words, axis=1)
        keep = np.concatenate([np.ones((m, 1), bool), np.diff(words, axis=1) > 0], axis=1)
        rows = np.repeat(np.arange(m), keep.sum(1))
        cols = words[keep]
        vals = (rng.random(len(cols)) + 0.1).astype(np.float32)
        block = sp.csr_matrix((vals, (rows, cols)), shape=(m, dim))
        norms = np.sqrt(np.asarray(block.multiply(block).sum(1)).ravel())
        blocks.append(sp.diags(1 / norms).astype(np.float32) @ block)
    return sp.vstack(blocks).tocsr()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--per-row", type=int, default=300)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--out", default=str(HERE / "results" / "inverted"))
    args = parser.parse_args()
    m = zipf_rows(args.rows, args.words, args.per_row, 0)
    n = m.shape[0]
    with tempfile.TemporaryDirectory(dir=HERE) as work:
        path = Path(work) / "index.inverted"

        def blocks():
            for a in range(0, n, 8192):
                b = min(n, a + 8192)
                yield np.arange(a, b), m[a:b]

        t0 = time.perf_counter()
        write_inverted(path, blocks, n, args.words)
        build = time.perf_counter() - t0
        inv = InvertedFile(path)
        rng = np.random.default_rng(1)
        queries = rng.choice(n, args.queries, replace=False)
        times = {"inverted file": [], "exhaustive CSR scan": []}
        agree = 0
        for qi in queries:
            q = m[qi].toarray().ravel()
            t0 = time.perf_counter()
            _, ids = inv.search(q, args.k)
            times["inverted file"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            s = m @ q
            top = np.argpartition(-s, args.k)[:args.k]
            top = top[np.lexsort((top, -s[top]))]
            times["exhaustive CSR scan"].append(time.perf_counter() - t0)
            agree += int(np.array_equal(ids[0][:10], top[:10]))
        size = path.stat().st_size
    report = {"rows": n, "words": args.words, "values_per_row": round(m.nnz / n, 1),
              "build_s": round(build, 1), "bytes_per_image": round(size / n),
              "top10_equal_to_exact": f"{agree}/{args.queries}",
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "load_average": os.getloadavg(),
              "p50_ms": {k: round(1e3 * float(np.median(v)), 2) for k, v in times.items()},
              "p99_ms": {k: round(1e3 * float(np.percentile(v, 99)), 2)
                         for k, v in times.items()}}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = ["# Inverted file against an exhaustive scan", "",
             f"`python benchmarks/bench_inverted.py --rows {args.rows}` (one thread)", "",
             "```", json.dumps(report, indent=1), "```"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

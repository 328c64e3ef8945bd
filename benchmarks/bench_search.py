"""Similarity search at ILSVRC scale: the index `features index` chooses, on 1.28M vectors.

1. A real `sbow` store is built on a few thousand generated ImageNet-like JPEGs
   (benchmarks/corpus.py; reused by later runs).
2. A synthetic store of ``--rows`` images (1,281,167 by default, ILSVRC-2012 train) is made
   from its real tf-idf rows: each row is a real row with its weights jittered
   (log-normal, sigma 0.35) and 15% of its words dropped, plus 30% of the words of another
   real row at 0.3 weight, L2-normalized; every 997th image is a failed one (no row). It is
   written a block at a time (bounded memory) by the store's writer (features.store.write),
   key index included.
   The exact top 10 of ``--queries`` held-out vectors generated the same way is computed
   on the blocks while they are written (the ground truth for recall).
3. `features index STORE` builds the index in a subprocess: build time, peak RSS, bytes.
4. A fresh process opens the store and the index once (`features.search.Searcher`, one
   thread) and answers, interleaved: queries by key, queries by a 500x375 JPEG through the
   sbow recipe (decode, dense SIFT, words, tf-idf, search: extraction included), and the
   held-out vectors (recall@10 against exact). Its RSS is read after all of them.
5. The peer, in the same process afterwards: the exhaustive flat index that `features`
   built before (`IndexFlatIP`), on the first 10,000 to 128,000 rows (it is linear in the
   rows; 1.28M rows would hold 5.1 GB), interleaved with our key queries; its p50 scaled to
   1.28M is the peer figure. The same sizes give the exact-index threshold.
6. A real `features serve STORE --threads 2` process on the same store, queried over
   loopback HTTP once it answers /api/health: queries by key (`GET /api/search?key=`) and
   by uploaded 500x375 JPEG (`POST /api/search`, the probe's JPEGs, each upload's bytes
   unique so the server's query cache never answers) one client at a time (client p50/p99,
   the server's `timing_ms`), then a bounded load of 8 concurrent clients (p50, p99, errors,
   which must be 0); then the server's VmRSS, VmHWM, RssFile and RssAnon from /proc.

    python benchmarks/bench_search.py [--rows 1281167] [--queries 200] [--real-images 4000]
    python benchmarks/bench_search.py --rows 1281167 --skip-build   # reuse the store's index
    python benchmarks/bench_search.py --rows 1281167 --serve-only   # step 6 alone
    python benchmarks/bench_search.py --serve-only --store DIR      # on any indexed store
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from corpus import make_corpus  # noqa: E402

from features.presets import Config  # noqa: E402
from features.store.write import (CSRWriter, ImageTable, create_offsets,  # noqa: E402
                                  write_codebook, write_failures, write_header, write_idf)

ILSVRC_TRAIN = 1_281_167
WORK = HERE / "_work"


def rss_mb(field="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------ real store
def real_store(n_images):
    from features.pipeline import run
    from features.presets import get_preset
    from features.sources import open_source
    out = WORK / f"real{n_images}"
    if (out / "store.h5").exists():
        return out
    train = make_corpus(WORK / f"corpus{n_images}", n_images)
    run(get_preset("sbow"), open_source(str(train)), out, jobs=2, progress=False)
    return out


def real_rows(store_dir):
    from features.store.encodings import EncodingRows
    from features.store import Store
    with Store(store_dir) as s:
        rows = EncodingRows(s.h5, "bovw")
        x = rows.block(0, rows.n_rows)
        ok = (s.column("status") == 0) & (np.abs(x).sum(1) > 0)
        return x[ok], s.h5.attrs["config"], s.h5.attrs["versions"], s.centroids, s.idf


# ------------------------------------------------------------------ synthetic store
def synthetic_block(real, n, rng):
    k = real.shape[1]
    r1 = rng.integers(len(real), size=n)
    r2 = rng.integers(len(real), size=n)
    x = real[r1]
    x *= np.exp(rng.normal(0.0, 0.35, (n, k))).astype(np.float32)
    x *= rng.random((n, k), dtype=np.float32) > 0.15
    y = real[r2]
    y *= (rng.random((n, k), dtype=np.float32) < 0.3) * np.float32(0.3)
    x += y
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1
    x /= norms
    return x


def make_synthetic(rows, real, config, versions, centroids, idf, queries, seed=0, block=16384):
    """Write the synthetic store; return the held-out query vectors and their exact top 10."""
    out = WORK / f"synthetic{rows}"
    done = out / "truth.npz"
    if done.exists() and (out / "store.h5").exists():
        t = np.load(done)
        return out, t["queries"], t["truth"], t["truth_scores"], float(t["seconds"])
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():
        if p.is_file():
            p.unlink()
    start = time.monotonic()
    q = synthetic_block(real, queries, np.random.default_rng([seed, 1 << 40]))
    best_s = np.full((queries, 10), -np.inf, np.float32)
    best_i = np.full((queries, 10), -1, np.int64)
    k = real.shape[1]
    tmp = out / ".store.h5.tmp"
    failures = []
    with h5py.File(tmp, "w") as f:
        write_header(f, Config.from_json(config), rows, versions=json.loads(versions))
        table = ImageTable(f, rows)
        create_offsets(f, rows)     # no descriptors: all zeros
        bovw = CSRWriter(f.create_group("encodings"), "bovw", rows, k, weighting="tf-idf",
                         power=1.0, normalization="l2", synthetic=1)
        write_idf(f, idf)
        write_codebook(f, centroids)
        for a in range(0, rows, block):
            b = min(a + block, rows)
            n = b - a
            x = synthetic_block(real, n, np.random.default_rng([seed, a]))
            ids = np.arange(a, b)
            failed = ids % 997 == 996
            x[failed] = 0
            labels = (ids // 1282) % 1000
            names = [f"n{10000000 + int(c):08d}/n{10000000 + int(c):08d}_{i}.JPEG"
                     for c, i in zip(labels, ids)]
            table.append(key=names, label=labels, width=np.full(n, 500), height=np.full(n, 375),
                         status=np.where(failed, 2, 0),
                         reason=np.where(failed, "synthetic failure", ""))
            failures += [(int(i), names[i - a], "synthetic failure") for i in ids[failed]]
            r, c = np.nonzero(x)
            bovw.append(np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))]), c,
                        x[r, c])
            # exact top 10 of the held-out queries, merged block by block
            s = q @ x.T
            top = np.argpartition(-s, 10, axis=1)[:, :10]
            cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
            cand_i = np.concatenate([best_i, top + a], 1)
            keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :10]
            best_s = np.take_along_axis(cand_s, keep, 1)
            best_i = np.take_along_axis(cand_i, keep, 1)
            print(f"  synthetic rows {b}/{rows}", file=sys.stderr, end="\r")
        bovw.close()
        write_failures(f, failures)
        table.close()
    os.replace(tmp, out / "store.h5")
    seconds = time.monotonic() - start
    np.savez(done, queries=q, truth=best_i, truth_scores=best_s, seconds=seconds)
    print(file=sys.stderr)
    return out, q, best_i, best_s, seconds


# ------------------------------------------------------------------ build
def build(store_dir, factory=None):
    cmd = [sys.executable, "-m", "features", "index", str(store_dir), "--force"]
    if factory:
        cmd += ["--index", factory]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode:
        raise SystemExit(proc.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    record = json.loads((store_dir / "manifest.json").read_text())["steps"]["index"]
    return {"seconds": round(seconds, 1), "peak_rss_mb_children_max": round(peak),
            **_sizes(record)}


def _sizes(record):
    """Factory and sizes of an index record: index.faiss plus index.refine, if any."""
    refine = record.get("refine_bytes") or 0
    return {"factory": record["factory"], "params": record["params"],
            "vectors": record["rows"], "bytes": record["bytes"] + refine,
            "index_bytes": record["bytes"], "refine_bytes": refine,
            "bytes_per_image": round((record["bytes"] + refine) / record["rows"], 1)}


def index_record(store_dir):
    """The build figures of the index already in the store (its manifest record), or None."""
    path = Path(store_dir) / "manifest.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text()).get("steps", {}).get("index")
    from features.index import INDEX_FILE, index_paths
    if not record or not index_paths(store_dir, record)[INDEX_FILE].exists():
        return None
    return {"seconds": round(record["seconds"], 1), "peak_rss_mb_children_max": None,
            "reused": True, "finished": record.get("finished"),
            "requested": record.get("requested"), **_sizes(record)}


def pick_jpegs(real_images, n):
    """The first `n` 500x375 JPEGs of the generated corpus (the probe's and the server's)."""
    import cv2
    jpegs = []
    for p in sorted((WORK / f"corpus{real_images}" / "train").rglob("*.JPEG")):
        data = p.read_bytes()
        h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8).shape
        if (w, h) == (63, 47):  # 500x375 reduced by 8
            jpegs.append(data)
        if len(jpegs) == n:
            break
    if not jpegs:
        raise SystemExit(f"no 500x375 JPEG under {WORK / f'corpus{real_images}'}")
    return jpegs


# ------------------------------------------------------------------ probe (own process)
def probe(args):
    """Runs in a fresh process: open once, answer queries, report timings and RSS."""
    import faiss

    from features.store.encodings import EncodingRows
    from features.search import Searcher

    store_dir = Path(args.probe)
    t = np.load(store_dir / "truth.npz")
    rss0 = rss_mb()
    t0 = time.perf_counter()
    searcher = Searcher(store_dir, threads=1)
    open_ms = (time.perf_counter() - t0) * 1e3
    rss_open = rss_mb()
    rng = np.random.default_rng(7)
    n_rows = searcher.store.n_images
    rows = rng.choice(np.flatnonzero(searcher.status == 0), args.key_queries, replace=False)
    keys = [searcher.store.key_of(int(i)) for i in rows]
    jpegs = pick_jpegs(args.real_images, args.jpeg_queries)

    def key_query(key):
        t = time.perf_counter()
        res = searcher.search(searcher.query_from_key(key), 10)
        return (time.perf_counter() - t) * 1e3, res

    def jpeg_query(data):
        t = time.perf_counter()
        res = searcher.search(searcher.query_from_bytes("q.jpg", data), 10)
        return (time.perf_counter() - t) * 1e3, res

    def vector_query(v):
        t = time.perf_counter()
        _, ids = searcher.index.search(v[None], 10)
        return (time.perf_counter() - t) * 1e3, ids[0]

    for key in keys[:10]:  # warm-up
        key_query(key)
    jpeg_query(jpegs[0])
    times = {"key": [], "jpeg": [], "vector": []}
    found = []
    rounds = max(len(keys), len(jpegs), len(t["queries"]))
    for r in range(rounds):
        if r < len(keys):
            ms, res = key_query(keys[r])
            times["key"].append(ms)
            assert all(h["key"] != keys[r] for h in res)
        if r < len(t["queries"]):
            ms, ids = vector_query(t["queries"][r])
            times["vector"].append(ms)
            found.append(len(set(ids.tolist()) & set(t["truth"][r].tolist())) / 10)
        if r < len(jpegs) * 3:
            ms, _ = jpeg_query(jpegs[r % len(jpegs)])
            times["jpeg"].append(ms)
    rss_after = rss_mb()
    hwm = rss_mb("VmHWM")
    rss_file = rss_mb("RssFile")
    rss_anon = rss_mb("RssAnon")
    # the same key queries answered in one batch on all cores
    t0 = time.perf_counter()
    qs = [searcher.query_from_key(k) for k in keys]
    searcher.search_batch(qs, 10)
    batch_ms = (time.perf_counter() - t0) * 1e3 / len(keys)

    # the peer: exhaustive flat search, interleaved with our key queries
    rows_reader = EncodingRows(searcher.store.h5, "bovw")
    peer = []
    faiss.omp_set_num_threads(1)
    for size in args.peer_sizes:
        size = min(size, n_rows)
        flat = faiss.IndexFlatIP(rows_reader.dim)
        for a in range(0, size, 16384):
            flat.add(rows_reader.block(a, min(a + 16384, size)))
        ours, theirs = [], []
        for i in range(args.peer_queries):
            v = searcher.query_from_key(keys[i]).vector
            t1 = time.perf_counter()
            flat.search(v, 11)
            theirs.append((time.perf_counter() - t1) * 1e3)
            ours.append(key_query(keys[i])[0])
        peer.append({"rows": size, "flat_p50_ms": round(float(np.median(theirs)), 3),
                     "ours_key_p50_ms": round(float(np.median(ours)), 3),
                     "flat_p50_ms_scaled_to_rows": round(float(np.median(theirs))
                                                         * n_rows / size, 1)})
        del flat
    pct = {k: {"p50": round(float(np.percentile(v, 50)), 3),
               "p99": round(float(np.percentile(v, 99)), 3), "n": len(v)}
           for k, v in times.items()}
    print(json.dumps({
        "open_ms": round(open_ms, 1), "rss_mb_before_open": round(rss0),
        "rss_mb_after_open": round(rss_open), "rss_mb_after_queries": round(rss_after),
        "rss_hwm_mb": round(hwm), "rss_file_mb": round(rss_file), "rss_anon_mb": round(rss_anon),
        "queries_answered": sum(len(v) for v in times.values()) + 10,
        "recall_at_10": round(float(np.mean(found)), 4), "single_thread_ms": pct,
        "batch_key_ms_per_query": round(batch_ms, 3), "batch_threads": searcher.batch_threads,
        "peer_flat": peer}))
    searcher.close()


def run_probe(store_dir, args):
    cmd = [sys.executable, __file__, "--probe", str(store_dir),
           "--real-images", str(args.real_images),
           "--key-queries", str(args.key_queries), "--jpeg-queries", str(args.jpeg_queries),
           "--peer-queries", str(args.peer_queries),
           "--peer-sizes", ",".join(map(str, args.peer_sizes))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ features serve
def proc_status_mb(pid):
    """VmRSS, VmHWM, RssFile, RssAnon of process `pid` in MB (from /proc/PID/status)."""
    out = {}
    for line in open(f"/proc/{pid}/status"):
        name = line.split(":")[0]
        if name in ("VmRSS", "VmHWM", "RssFile", "RssAnon"):
            out[name] = round(int(line.split()[1]) / 1024)
    return out


def serve_part(store_dir, args):
    """A real `features serve` process on the store, queried over loopback HTTP: one client
    at a time, then `--serve-clients` concurrent ones; its RSS read from /proc afterwards."""
    from urllib.parse import quote

    sys.path.insert(0, str(HERE.parent / "tests"))
    from serve_helpers import Server, request

    from features.serve.load import run_load
    from features.store import Store

    with Store(store_dir) as s:
        ok_rows = np.flatnonzero(s.column("status") == 0)
        # not the probe's keys (seed 7): their rows would be in the page cache already
        n = args.key_queries + args.serve_requests
        rows = np.random.default_rng(8).choice(ok_rows, n, replace=n > len(ok_rows))
        keys = [s.key_of(int(i)) for i in rows]
    jpegs = pick_jpegs(args.real_images, args.jpeg_queries)
    k = 10
    server_ms = {"key": [], "jpeg": []}

    def key_request(key):
        return ("GET", f"/api/search?key={quote(key)}&k={k}", None, ("key", key))

    def jpeg_request(i):
        # bytes after the end marker are ignored by the decoder but make every upload unique:
        # the server caches queries by the digest of their bytes
        return ("POST", f"/api/search?k={k}", jpegs[i % len(jpegs)] + f"bench-{i}".encode(),
                ("jpeg", None))

    def check(expect, body):
        out = json.loads(body)
        kind, key = expect
        server_ms[kind].append(out.get("timing_ms", {}))
        hits = out.get("results", [])
        return len(hits) == k and all(h["key"] != key for h in hits)

    # one client: the key queries with a JPEG query after every few, as in the probe
    every = max(1, args.key_queries // max(1, args.jpeg_queries))
    plan, kinds = [], []
    for i, key in enumerate(keys[:args.key_queries]):
        plan.append(key_request(key))
        kinds.append("key")
        if i % every == every - 1 and i // every < args.jpeg_queries:
            plan.append(jpeg_request(i // every))
            kinds.append("jpeg")
    # concurrent: other keys, a JPEG upload in every fifth request
    load = [jpeg_request(10_000 + i) if i % 5 == 4 else key_request(keys[args.key_queries + i])
            for i in range(args.serve_requests)]
    load_kinds = ["jpeg" if i % 5 == 4 else "key" for i in range(args.serve_requests)]

    t0 = time.monotonic()
    srv = Server(store_dir, "--threads", args.serve_threads, startup=900)
    out = {"threads": args.serve_threads, "clients": args.serve_clients, "k": k}
    try:
        while True:
            try:
                if request(srv.url + "api/health", timeout=60)[0] == 200:
                    break
            except OSError:  # not accepting yet
                pass
            if srv.proc.poll() is not None or time.monotonic() - t0 > 900:
                raise SystemExit("features serve did not answer /api/health")
            time.sleep(0.2)
        out["startup_s"] = round(time.monotonic() - t0, 2)
        out["rss_after_open_mb"] = proc_status_mb(srv.proc.pid)
        # warm-up outside the timing: first touches of HDF5, the key table, the codebook
        warm = [key_request(key) for key in keys[-10:]] + [jpeg_request(20_000)]
        run_load(srv.url, warm, clients=1, deadline=300, check=check)
        for v in server_ms.values():
            v.clear()

        single = run_load(srv.url, plan, clients=1, deadline=1800, check=check)
        one = single.summary()
        for kind in ("key", "jpeg"):
            which = [i for i, x in enumerate(kinds) if x == kind]
            one[kind] = {"n": len(which), "p50_ms": round(single.percentile(50, which), 2),
                         "p99_ms": round(single.percentile(99, which), 2)}
            for field in ("total", "query", "search", "queue"):
                values = [t[field] for t in server_ms[kind] if field in t]
                if values:
                    one[kind][f"server_{field}_p50_ms"] = round(float(np.median(values)), 2)
        one["error_examples"] = single.error_examples
        out["one_client"] = one
        out["rss_after_one_client_mb"] = proc_status_mb(srv.proc.pid)

        conc = run_load(srv.url, load, clients=args.serve_clients, deadline=1800, check=check)
        many = conc.summary()
        for kind in ("key", "jpeg"):
            which = [i for i, x in enumerate(load_kinds) if x == kind]
            many[kind] = {"n": len(which), "p50_ms": round(conc.percentile(50, which), 2),
                          "p99_ms": round(conc.percentile(99, which), 2)}
        many["error_examples"] = conc.error_examples
        out["concurrent"] = many
        # the bar's figure: the server after all those queries
        out["rss_after_queries_mb"] = proc_status_mb(srv.proc.pid)
        out["queries_answered"] = len(warm) + single.requests + conc.requests
    finally:
        code, err = srv.stop()
    out["exit_code"] = code
    if code != 0:
        out["stderr_tail"] = err[-2000:]
    return out


# ------------------------------------------------------------------ report
def report(res, path_md):
    lines = ["# Search at ILSVRC scale", ""]
    if "probe" in res:
        lines += [
            f"`python benchmarks/bench_search.py --rows {res['rows']}` ({res['date']}, "
            f"{res['machine']}). Synthetic store of {res['rows']:,} images from the real "
            f"tf-idf rows of a {res['real_images']:,}-image `sbow` store ({res['real_rows']:,} "
            f"usable rows, {res['mean_nnz']:.0f} words per row on average), every 997th image "
            f"failed; generated in {res['synthetic_seconds']:.0f} s.", ""]
        lines += report_index_and_probe(res)
    else:
        lines += [f"`python benchmarks/bench_search.py --serve-only` ({res['date']}, "
                  f"{res['machine']}) on `{res['store']}` ({res['rows']:,} images), index "
                  f"`{res['build']['factory']}` built before this run.", ""]
    lines += report_serve(res)
    la = res.get("load_average_at_end", [float("nan")])[0]
    lines += [f"Load average at the end of the run: {la:.1f} on {os.cpu_count()} cores (other "
              "jobs shared the machine): absolute times are those of a process that got a "
              "fraction of a core" + ("; the ratios against the peer, measured interleaved in "
                                      "the same process, are the comparable figures."
                                      if "probe" in res else "."), ""]
    path_md.write_text("\n".join(lines))


def report_index_and_probe(res):
    b, p = res["build"], res["probe"]
    st = p["single_thread_ms"]
    peer = p["peer_flat"]
    if b.get("reused"):
        build_time = (f"{b['seconds']:.0f} s (from the manifest: built before this run, "
                      f"finished {b.get('finished')})")
        peak = "not measured in this run (`--skip-build` reused the index)"
    else:
        build_time = f"{b['seconds']:.0f} s"
        peak = f"{b['peak_rss_mb_children_max']:,} MB"
    lines = [
        "## Index (chosen automatically)",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| factory | `{b['factory']}` {json.dumps(b['params'])} |",
        f"| vectors | {b['vectors']:,} |",
        f"| bytes per image | {b['bytes_per_image']:,.0f} |",
        f"| index files | {b['bytes'] / 2**20:,.0f} MiB (`index.faiss` "
        f"{b.get('index_bytes', b['bytes']) / 2**20:,.0f}, `index.refine` "
        f"{b.get('refine_bytes', 0) / 2**20:,.0f}) |",
        f"| build time (`features index`) | {build_time} |",
        f"| build peak RSS | {peak} |",
        f"| recall@10 vs exact ({st['vector']['n']} held-out queries) | {p['recall_at_10']:.3f} |",
        "",
        "## One process holding the store and the index (`Searcher`, one thread)",
        "",
        "| query | p50 ms | p99 ms | goal |",
        "|---|---:|---:|---|",
        f"| by key (lookup, read its row, search, keys of the results) | {st['key']['p50']:.2f} "
        f"| {st['key']['p99']:.2f} | <= 5 ms |",
        f"| by a 500x375 JPEG (decode, sbow extraction, words, tf-idf, search) | "
        f"{st['jpeg']['p50']:.2f} | {st['jpeg']['p99']:.2f} | <= 10 ms |",
        f"| by vector (index search only) | {st['vector']['p50']:.2f} | "
        f"{st['vector']['p99']:.2f} | |",
        f"| by key, batch of {st['key']['n']} on {p['batch_threads']} threads, per query | "
        f"{p['batch_key_ms_per_query']:.2f} | | |",
        "",
        f"Opening the store and the index: {p['open_ms']:.0f} ms. RSS after opening: "
        f"{p['rss_mb_after_open']:,} MB; after {p['queries_answered']:,} queries: "
        f"**{p['rss_mb_after_queries']:,} MB** (of which {p['rss_file_mb']:,} MB are pages of "
        f"memory-mapped index files, {p['rss_anon_mb']:,} MB anonymous; goal <= 2 GB).",
        "",
        "## Peer: the exhaustive flat index (`IndexFlatIP`), same process, interleaved",
        "",
        "| rows | flat p50 ms | ours (by key) p50 ms | flat scaled to "
        f"{res['rows']:,} rows, ms | ratio |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in peer:
        lines.append(f"| {r['rows']:,} | {r['flat_p50_ms']:.2f} | {r['ours_key_p50_ms']:.2f} | "
                     f"{r['flat_p50_ms_scaled_to_rows']:,.0f} | "
                     f"{r['flat_p50_ms_scaled_to_rows'] / r['ours_key_p50_ms']:.0f}x |")
    lines += ["", "The flat scan is linear in the rows (5.1 GB at 1.28M rows), so it is "
              "measured on prefixes and scaled. `features index` switches from exact to "
              "compressed at `features.index.EXACT_BELOW` rows, where a flat scan costs about "
              "as much as a compressed query at 1.28M (rows 25,000-50,000 above).", ""]
    return lines


GOAL_RSS_MB = 1907  # 2 GB read strictly, as 2e9 bytes (/proc reports KiB)


def report_serve(res):
    sv = res["serve"]
    one, many = sv["one_client"], sv["concurrent"]
    rss, rss0 = sv["rss_after_queries_mb"], sv["rss_after_open_mb"]

    def server_ms(kind):
        v = one[kind].get("server_total_p50_ms")
        return "" if v is None else f"{v:.2f}"

    def met(value, goal):
        return "yes" if value <= goal else "**no**"

    return [
        "## `features serve` on the same store",
        "",
        f"A real `features serve STORE --threads {sv['threads']}` process (index "
        f"`{res['build']['factory']}`), queried over loopback HTTP (aiohttp client, "
        f"`features.serve.load.run_load`), k={sv['k']}. It answered `/api/health` "
        f"{sv['startup_s']:.1f} s after it was started. Every upload's bytes are unique (a "
        "suffix after the JPEG end marker), so none is answered from the server's query cache; "
        "the keys are drawn with another seed than the in-process probe's.",
        "",
        f"One client at a time ({one['requests']} requests after a warm-up of 11; errors: "
        f"**{one['errors']}**). Latency as the client sees it (HTTP, JSON and the thread pool "
        "included) and the server's own `timing_ms.total`:",
        "",
        "| query | n | p50 ms | p99 ms | server `timing_ms.total` p50 ms | goal | met |",
        "|---|---:|---:|---:|---:|---|---|",
        f"| `GET /api/search?key=KEY&k=10` | {one['key']['n']} | {one['key']['p50_ms']:.2f} | "
        f"{one['key']['p99_ms']:.2f} | {server_ms('key')} | <= 5 ms | "
        f"{met(one['key']['p50_ms'], 5)} |",
        f"| `POST /api/search?k=10`, a 500x375 JPEG | {one['jpeg']['n']} | "
        f"{one['jpeg']['p50_ms']:.2f} | {one['jpeg']['p99_ms']:.2f} | {server_ms('jpeg')} | "
        f"<= 10 ms | {met(one['jpeg']['p50_ms'], 10)} |",
        "",
        f"Bounded concurrent load: {sv['clients']} clients, {many['requests']} requests (a JPEG "
        f"upload in every fifth, keys otherwise), {many['requests_per_s']} requests/s; "
        f"errors: **{many['errors']}** (must be 0).",
        "",
        "| query | n | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| all | {many['requests']} | {many['p50_ms']:.2f} | {many['p99_ms']:.2f} |",
        f"| by key | {many['key']['n']} | {many['key']['p50_ms']:.2f} | "
        f"{many['key']['p99_ms']:.2f} |",
        f"| by JPEG | {many['jpeg']['n']} | {many['jpeg']['p50_ms']:.2f} | "
        f"{many['jpeg']['p99_ms']:.2f} |",
        "",
        f"With {sv['clients']} clients and {sv['threads']} threads on {os.cpu_count()} cores, "
        "requests wait their turn for a thread: these figures are mostly that queue.",
        "",
        f"Memory of the serve process (`/proc/PID/status`) after all {sv['queries_answered']:,} "
        f"queries: VmRSS **{rss['VmRSS']:,} MB**, VmHWM (peak) **{rss['VmHWM']:,} MB** "
        f"(goal <= 2 GB: {met(max(rss['VmRSS'], rss['VmHWM']), GOAL_RSS_MB)}); of the RSS, "
        f"{rss['RssFile']:,} MB are file pages (the memory-mapped index, the libraries) and "
        f"{rss['RssAnon']:,} MB anonymous. Right after opening: VmRSS {rss0['VmRSS']:,} MB. "
        f"It stopped on SIGTERM with exit code {sv['exit_code']}.",
        "",
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=ILSVRC_TRAIN)
    ap.add_argument("--queries", type=int, default=200, help="held-out vectors for recall")
    ap.add_argument("--real-images", type=int, default=4000)
    ap.add_argument("--key-queries", type=int, default=300)
    ap.add_argument("--jpeg-queries", type=int, default=40)
    ap.add_argument("--peer-queries", type=int, default=30)
    ap.add_argument("--peer-sizes", default="10000,25000,50000,128000")
    ap.add_argument("--index", help="a factory string instead of the automatic choice")
    ap.add_argument("--skip-build", action="store_true",
                    help="reuse the store's index when its manifest records one (the build "
                         "figures are then those of the manifest, peak RSS not measured)")
    ap.add_argument("--serve-only", action="store_true",
                    help="only the `features serve` part, on the store's existing index")
    ap.add_argument("--store", help="with --serve-only: an existing store with an index "
                                    "(default: the synthetic store of --rows)")
    ap.add_argument("--serve-threads", type=int, default=2, help="features serve --threads")
    ap.add_argument("--serve-clients", type=int, default=8)
    ap.add_argument("--serve-requests", type=int, default=400,
                    help="requests of the concurrent load")
    ap.add_argument("--out", default=str(HERE / "results" / "search"))
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.peer_sizes = [int(s) for s in str(args.peer_sizes).split(",")]
    if args.probe:
        return probe(args)
    if args.store and not args.serve_only:
        ap.error("--store goes with --serve-only")
    t0 = time.monotonic()
    res = {"rows": args.rows, "real_images": args.real_images}
    if args.serve_only:
        store_dir = Path(args.store) if args.store else WORK / f"synthetic{args.rows}"
        b = index_record(store_dir)
        if b is None:
            raise SystemExit(f"{store_dir}: no index recorded in its manifest "
                             "(run without --serve-only, or `features index` it)")
        with open_store(store_dir) as s:
            res["rows"] = s.n_images
        res.update(store=str(store_dir), build=b)
    else:
        real_dir = real_store(args.real_images)
        real, config, versions, centroids, idf = real_rows(real_dir)
        print(f"real rows: {len(real)}", file=sys.stderr)
        store_dir, q, truth, _, gen_s = make_synthetic(args.rows, real, config, versions,
                                                       centroids, idf, args.queries)
        res.update(real_rows=len(real), mean_nnz=float((real > 0).sum(1).mean()),
                   synthetic_seconds=gen_s)
        del real
        b = index_record(store_dir) if args.skip_build else None
        if b is not None and args.index and args.index not in (b["factory"], b["requested"]):
            b = None  # the store's index is not the one asked for
        if b is None:
            print("building the index", file=sys.stderr)
            b = build(store_dir, args.index)
        else:
            print("reusing the index in the store", file=sys.stderr)
        print(json.dumps(b), file=sys.stderr)
        print("querying", file=sys.stderr)
        res.update(build=b, probe=run_probe(store_dir, args))
    print("features serve", file=sys.stderr)
    res["serve"] = serve_part(store_dir, args)
    print(json.dumps(res["serve"]), file=sys.stderr)
    import faiss
    res.update({"date": time.strftime("%Y-%m-%d"), "faiss": faiss.__version__,
                "machine": f"{os.cpu_count()} cores, shared",
                "load_average_at_end": os.getloadavg(),
                "total_seconds": round(time.monotonic() - t0)})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    report(res, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())
    if res["serve"]["concurrent"]["errors"] or res["serve"]["one_client"]["errors"]:
        raise SystemExit("features serve answered errors (see the report)")


def open_store(store_dir):
    from features.store import Store
    return Store(store_dir)


if __name__ == "__main__":
    main()

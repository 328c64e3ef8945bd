"""`features serve` under load on loopback, side by side with the ways to query without it.

Store: the copy-detection set of `features demo` (18 photos x 6 versions = 108 images,
`sift` preset, 1000 words), built once under benchmarks/_work/serve.

Each round, interleaved:
- serve: a real `features serve --threads 2` process; 8 concurrent clients (aiohttp, one
  connection each) send a fixed mix of requests and stop when it is used up: queries by
  uploaded JPEG (`POST /api/search?k=10`), by key (`GET /api/search?key=...`), verified
  matches (`GET /api/matches`) and thumbnails (`GET /api/thumb`), `--requests` in all
  (each kind a quarter; every upload's bytes are unique, so none is answered from the
  server's query cache). Latency is per request as the client sees it (queueing included);
  an error is any answer other than 200 with the expected top result.
- peer, in process: the same upload and key queries through `features.search.Searcher`
  called directly, one at a time, one OpenCV and one FAISS thread (as the server sets them):
  the floor that HTTP, JSON and the pool add to.
- peer, command line: `features search STORE FILE --json`, one process per query, what a
  user had before `serve` (store, index and codebook opened for every query).
Medians over the rounds; ratios against the peers measured in the same round.

    python benchmarks/bench_serve.py [--rounds 3] [--requests 400] [--cli-queries 6]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from features.demo import write_copy_set  # noqa: E402
from features.serve.load import run_load  # noqa: E402
from serve_helpers import Server, cli_env  # noqa: E402

WORK = HERE / "_work" / "serve"
KINDS = ("upload", "key", "matches", "thumb")


def build_store():
    images, store = WORK / "images", WORK / "store"
    from features.index import INDEX_FILE, current_index_paths
    if not current_index_paths(store)[INDEX_FILE].exists():
        from features.pipeline import run
        from features.presets import get_preset
        from features.sources import open_source
        write_copy_set(images)
        run(get_preset("sift"), open_source(str(images)), store, progress=False)
    return images, store


def plan_for(images, n):
    files = sorted(images.glob("*/*.jpg"))
    keys = [p.relative_to(images).as_posix() for p in files]
    plan = {"upload": [], "key": [], "matches": [], "thumb": []}
    for i in range(n):
        key, data = keys[i % len(keys)], files[i % len(files)].read_bytes()
        kind = KINDS[i % 4]
        if kind == "upload":
            # bytes after a JPEG's end marker are ignored by the decoder; they make every
            # upload unique, so the server's query cache (by digest) never answers one
            data += f"bench-{i}".encode()
            plan[kind].append(("POST", "/api/search?k=10", data, ("top", key)))
        elif kind == "key":
            plan[kind].append(("GET", f"/api/search?key={quote(key)}&k=10", None,
                               ("class", key.split("/")[0])))
        elif kind == "matches":
            other = key.split("/")[0] + "/original.jpg"
            plan[kind].append(("GET", f"/api/matches?query={quote(key)}&key={quote(other)}",
                               None, ("matches", None)))
        else:
            plan[kind].append(("GET", f"/api/thumb?key={quote(key)}", None, ("jpeg", None)))
    mixed = [r for group in zip(*plan.values()) for r in group]
    kinds = [k for _ in zip(*plan.values()) for k in plan]
    return mixed, kinds, files, keys


def check(expect, body):
    what, value = expect
    if what == "jpeg":
        return body[:3] == b"\xff\xd8\xff"
    out = json.loads(body)
    if what == "top":
        return out["results"][0]["key"] == value
    if what == "class":
        # the same photo class as the query among the top results (a copy of it)
        return out["results"][0]["key"].split("/")[0] == value
    return "inliers" in out


def serve_round(store, plan, kinds, clients):
    """The plan with `clients` concurrent clients, then with one client (no queueing: each
    request's own cost through HTTP), each on a fresh server."""
    out = {}
    for name, n in (("serve", clients), ("serve_1", 1)):
        srv = Server(store, "--threads", 2)
        try:
            # warm-up outside the timing: first touches of HDF5 and the key table
            run_load(srv.url, plan[1:9:2], clients=1, deadline=60, check=check)
            result = run_load(srv.url, plan, clients=n, deadline=900, check=check)
        finally:
            code, err = srv.stop()
        if code != 0:
            raise RuntimeError(f"features serve exited {code}: {err}")
        summary = result.summary()
        for kind in KINDS:
            which = [i for i, k in enumerate(kinds) if k == kind]
            summary[f"{kind}_p50_ms"] = round(result.percentile(50, which), 2)
            summary[f"{kind}_p99_ms"] = round(result.percentile(99, which), 2)
        out[name] = summary
    return out


def in_process_round(store, files, keys, n):
    import cv2
    import faiss

    from features.search import Searcher
    # as in the server: one OpenCV and one FAISS thread per query
    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    lat_upload, lat_key = [], []
    with Searcher(store) as s:
        s.search(s.query_from_key(keys[0]), 10)  # warm-up
        for i in range(n):
            data = files[i % len(files)].read_bytes()
            t0 = time.perf_counter()
            s.search(s.query_from_bytes("q", data), 10)
            lat_upload.append(1000 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            s.search(s.query_from_key(keys[i % len(keys)]), 10)
            lat_key.append(1000 * (time.perf_counter() - t0))
    return {"upload_p50_ms": statistics.median(lat_upload),
            "key_p50_ms": statistics.median(lat_key),
            "queries_per_s": 2 * n / (sum(lat_upload) + sum(lat_key)) * 1000}


def cli_round(store, files, n):
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "features", "search", str(store),
                        str(files[(7 * i) % len(files)]), "--json"], check=True,
                       capture_output=True, env=cli_env())
        lat.append(1000 * (time.perf_counter() - t0))
    return {"per_query_p50_ms": statistics.median(lat)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--cli-queries", type=int, default=6)
    parser.add_argument("--out", default=str(HERE / "results" / "serve"))
    args = parser.parse_args()
    images, store = build_store()
    load_at_start = round(os.getloadavg()[0], 1)
    plan, kinds, files, keys = plan_for(images, args.requests)
    rounds = []
    for r in range(args.rounds):
        served = serve_round(store, plan, kinds, args.clients)
        inproc = in_process_round(store, files, keys, 54)
        cli = cli_round(store, files, args.cli_queries)
        rounds.append({**served, "in_process": inproc, "cli": cli})
        print(f"round {r + 1}: {json.dumps(rounds[-1])}", flush=True)

    def med(path):
        values = []
        for rd in rounds:
            v = rd
            for p in path:
                v = v[p]
            values.append(v)
        return round(statistics.median(values), 2)

    report = {
        "setting": {"store": "copy-detection set, 108 images, sift preset, 1000 words",
                    "requests": args.requests, "clients": args.clients, "threads": 2,
                    "rounds": args.rounds, "cpus": os.cpu_count(),
                    "load_average_at_start": load_at_start,
                    "python": platform.python_version()},
        "rounds": rounds,
        "median": {
            name: {field: med((name, field)) for field in rounds[0][name]
                   if field not in ("statuses", "errors")}
            for name in ("serve", "serve_1", "in_process", "cli")},
        "errors": {name: max(rd[name]["errors"] for rd in rounds)
                   for name in ("serve", "serve_1")},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(report):
    s, m, e = report["setting"], report["median"], report["errors"]
    rows = []
    for kind, what in (("", "all requests"), ("upload_", "search by uploaded JPEG"),
                       ("key_", "search by key"), ("matches_", "verified matches"),
                       ("thumb_", "thumbnail")):
        a, b = m["serve"], m["serve_1"]
        rows.append(f"| {what} | {a[kind + 'p50_ms']} | {a[kind + 'p99_ms']} "
                    f"| {b[kind + 'p50_ms']} | {b[kind + 'p99_ms']} |")
    table = "\n".join(rows)
    ip, cli = m["in_process"], m["cli"]
    return f"""# features serve under load (`python benchmarks/bench_serve.py`)

{s['store']}; `features serve --threads 2` on loopback; {s['requests']} requests per run (a
quarter each: search by uploaded JPEG, search by key, verified matches, thumbnail), sent by
{s['clients']} concurrent clients, then by one client; {s['rounds']} rounds, medians;
{s['cpus']} cores shared with other work (load average {s.get('load_average_at_start', '?')} at
the start).

Errors (any answer but 200 with the expected result): **{e['serve']}** with {s['clients']}
clients, {e['serve_1']} with one, out of {s['requests']} each. Throughput:
{m['serve']['requests_per_s']} requests/s with {s['clients']} clients,
{m['serve_1']['requests_per_s']} with one.

| latency, ms | p50, {s['clients']} clients | p99, {s['clients']} clients | p50, 1 client | p99, 1 client |
|---|---:|---:|---:|---:|
{table}

Peers, measured in the same rounds (p50 per query, ms):

| how | upload query | key query |
|---|---:|---:|
| `features serve`, one client (HTTP, JSON, pool) | {m['serve_1']['upload_p50_ms']} | {m['serve_1']['key_p50_ms']} |
| `Searcher` in process, one thread (no HTTP) | {ip['upload_p50_ms']:.2f} | {ip['key_p50_ms']:.2f} |
| `features search FILE --json`, a process per query | {cli['per_query_p50_ms']:.0f} | |

A query by upload through `features serve` costs
{m['serve_1']['upload_p50_ms'] / max(ip['upload_p50_ms'], 1e-9):.2f}x the in-process call and is
{cli['per_query_p50_ms'] / max(m['serve_1']['upload_p50_ms'], 1e-9):.0f}x faster than a
`features search` process, which opens the store, the index and the codebook every time.
With {s['clients']} clients and 2 threads, requests wait their turn for a thread: the p50 and
p99 above are mostly that queue (the machine has 2 cores).
"""


if __name__ == "__main__":
    main()

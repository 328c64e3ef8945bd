"""Copy detection among growing numbers of distractors (issue 20): 1000 words + FAISS
against a large vocabulary (a vocabulary tree) + an inverted file, plain and re-ranked.

Queries: 9 of the demo's photos (scikit-image) x 8 versions (the original and 7 edited
copies: JPEG 15, 60% crop, 12-degree rotation, half size, perspective, dark, hazy). Each of
the 72 image files is a query, searched by file (``Searcher.search(path)``: its features
extracted, quantized and encoded in the timed call); its relevant results are the 7 other
versions of its photo (the stored image of the query file itself is left out).
Distractors: random views (a crop of 35-100% of each side, a flip, a rotation by a multiple
of 90 degrees, a scale of 0.5-1, JPEG quality 60-95; at most 512 pixels a side) of real
photos that share no content with the queries: the demo's other photos (textures among
them: brick, grass, gravel), matplotlib's sample photo, and the photos of VLFeat's
documentation (``/usr/share/doc/libvlfeat-dev/doc/images``, Debian's libvlfeat-dev, when
installed). A few dozen photos seen thousands of times: distractors that share words with
each other much more than a million different photos would.

Each vocabulary is learned once, on the queries and the first ``--learn`` distractors
(``sift`` preset):

- ``--words 1000`` (flat k-means): the index ``features index`` chooses (exact FAISS);
- ``--words W --tree-branching 10 --points-per-word P --sample-per-image 1000`` (a
  vocabulary tree; above 16,384 words the index is an inverted file);

and every size of ``--sizes`` (0: the queries alone, the baseline of "within 0.02") is a
store encoded ``--like`` it, so that only the distractors change. With ``--hamming BITS``
each store of the large vocabulary is searched again through an inverted file with
Hamming embedding of that many bits (``features index --index Inverted --hamming BITS``),
reported as a store of its own.

Reported per store: mAP and recall@100 of the true copies, plain and with re-ranking;
the query time by image file, extraction included, on one thread (``OMP_NUM_THREADS=1``,
``Searcher(threads=1)``): wall-clock median and 90th percentile, and the median CPU time
of the process (the machine may be shared: CPU time is what the query itself costs);
memory per image: the bytes of ``store.h5`` without the codebook plus those of the index,
over the images; the load average while it was measured. Then a fit of mAP against
log10(distractors) and of the median query time against distractors, projected to
100,000 and 1,280,000 (a projection, not a measurement).

    python benchmarks/bench_distractors.py [--sizes 0,1000,10000] [--words 100000]
        [--presets sift,sift-fast] [--costs] [--merge] [--hamming 64] [--shortlist 300]

``--presets``: one series of large-vocabulary stores per preset, side by side (the queries
and distractors are the same files; each preset decodes and extracts them its own way).
``--flat-preset``: the recipe of the 1000-word series; ``--no-large``: that series only.
``--shortlist N``: re-ranking verifies the best N results instead of 100 (the series are
named with it; with ``--keep`` and ``--merge`` a rerun over the same ``--work`` scores the
stores already built). ``--costs``: the CPU time of each stage of a re-ranked query in every store
(``query_costs.py``, ``query_costs.md`` next to ``--out``). ``--merge``: the series of the
report already at ``--out`` that this run does not measure keep their rows.

The images and stores are written under ``--work`` (not kept by default: ``--keep``).
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from features.demo import EDITS, write_copy_set  # noqa: E402
from features.pipeline import build_index, run  # noqa: E402
from features.presets import get_preset  # noqa: E402
from features.search import Searcher  # noqa: E402
from features.search.metrics import average_precision  # noqa: E402
from features.sources import open_source  # noqa: E402
from query_costs import costs_table, stage_costs  # noqa: E402

# a query on one core: OpenCV's SIFT otherwise spreads over a thread per core, and the CPU
# time of the process then counts both (the pipeline's workers set their own limit)
cv2.setNumThreads(1)

QUERY_PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
                "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg")
DISTRACTOR_PHOTOS = ("brick.png", "cell.png", "clock_motion.png", "grass.png", "gravel.png",
                     "hubble_deep_field.jpg", "ihc.png", "moon.png", "text.png",
                     "microaneurysms.png")
VLFEAT_IMAGES = Path("/usr/share/doc/libvlfeat-dev/doc/images")
DISTRACTORS = "zz-distractors"
MAX_SIDE = 512
PROJECT = (100_000, 1_280_000)


def distractor_photos():
    import skimage
    data = Path(skimage.__file__).parent / "data"
    paths = [data / name for name in DISTRACTOR_PHOTOS]
    try:
        import matplotlib
        paths.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:
        pass
    if VLFEAT_IMAGES.exists():
        paths += sorted(VLFEAT_IMAGES.glob("*.jpg"))
    out = []
    for p in paths:
        im = cv2.imread(str(p))
        if im is not None and min(im.shape[:2]) >= 100:
            out.append((p.name, im))
    return out


def write_distractors(folder, n, seed=0):
    """``n`` views, the same first ones whatever ``n`` (one seeded stream)."""
    rng = np.random.default_rng(seed)
    photos = distractor_photos()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _, im = photos[int(rng.integers(len(photos)))]
        h, w = im.shape[:2]
        ch, cw = int(h * rng.uniform(0.35, 1.0)), int(w * rng.uniform(0.35, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        view = im[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            view = view[:, ::-1]
        view = np.ascontiguousarray(np.rot90(view, int(rng.integers(4))))
        s = rng.uniform(0.5, 1.0) * min(1.0, MAX_SIDE / max(view.shape[:2]))
        view = cv2.resize(view, (max(16, int(view.shape[1] * s)), max(16, int(view.shape[0] * s))),
                          interpolation=cv2.INTER_AREA)
        path = folder / f"d{i:07d}.jpg"
        if not path.exists():
            cv2.imwrite(str(path), view, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 96))])
    return [name for name, _ in photos]


def image_set(work, queries, pool, n):
    """A folder of the queries and the first ``n`` distractors (hard links)."""
    folder = work / f"set-{n}"
    if folder.exists():
        return folder
    tmp = work / f"set-{n}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for src in sorted(queries.rglob("*.jpg")):
        dst = tmp / src.relative_to(queries)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)
    (tmp / DISTRACTORS).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"d{i:07d}.jpg"
        os.link(pool / name, tmp / DISTRACTORS / name)
    tmp.rename(folder)
    return folder


def store_bytes(store):
    """(bytes per image without the codebook: store.h5's other datasets and the index;
    the codebook's bytes; images)."""
    store = Path(store)
    h5 = store / "store.h5"
    with h5py.File(h5, "r") as f:
        codebook = 0

        def add(name, obj):
            nonlocal codebook
            if isinstance(obj, h5py.Dataset):
                codebook += obj.id.get_storage_size()
        f["codebook"].visititems(add)
        images = len(f["images/status"])
    manifest = json.loads((store / "manifest.json").read_text())
    index = 0
    for d in store.glob("index-*"):
        if d.name in json.dumps(manifest):
            index += sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    rest = h5.stat().st_size - codebook
    return {"bytes_per_image": round((rest + index) / images),
            "index_bytes_per_image": round(index / images),
            "codebook_bytes": codebook, "images": images}


def score(store, queries_dir, k=100, repeats=1, shortlist=100):
    """mAP, recall@k and query times of the 72 query files, plain and re-ranked (the best
    ``shortlist`` results verified)."""
    out = {}
    files = sorted(queries_dir.rglob("*.jpg"))
    with Searcher(store, threads=1) as searcher:
        out["index"] = type(searcher.index).__name__
        own = {str(f.relative_to(queries_dir)): searcher.store.index_of(
            str(f.relative_to(queries_dir))) for f in files}
        photo = {i: key.split("/", 1)[0] for key, i in own.items()}
        searcher.search(str(files[0]), k=10, rerank=True)            # warm up
        for rerank in (False, True):
            aps, recalls, wall, cpu = [], [], [], []
            loads = []
            for _ in range(repeats):
                for f in files:
                    key = str(f.relative_to(queries_dir))
                    me = own[key]
                    relevant = {i for i in photo if photo[i] == photo[me] and i != me}
                    t0, c0 = time.perf_counter(), time.process_time()
                    hits = searcher.search(str(f), k=501, rerank=rerank,
                                           shortlist=shortlist)
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                    hits = [h for h in hits if h["index"] != me][:500]
                    flags = [h["index"] in relevant for h in hits]
                    aps.append(average_precision(flags, len(relevant)))
                    recalls.append(sum(flags[:k]) / len(relevant))
                loads.append(os.getloadavg()[0])
            n = len(files)
            out["rerank" if rerank else "plain"] = {
                "mAP": round(float(np.mean(aps[:n])), 4),
                f"recall@{k}": round(float(np.mean(recalls[:n])), 4),
                "p50_ms": round(1e3 * float(np.median(wall)), 1),
                "p90_ms": round(1e3 * float(np.percentile(wall, 90)), 1),
                "cpu_p50_ms": round(1e3 * float(np.median(cpu)), 1),
                "load_average": round(float(np.mean(loads)), 2)}
        out["queries"] = len(files)
    return out


def write_costs(costs, path, command):
    """query_costs.md and .json: the CPU time of each stage of a query, per store."""
    lines = ["# Where a query's time goes", "", f"`{command}`: median CPU milliseconds per "
             f"stage of `Searcher.search(path, k=501, rerank=True)` over the "
             f"{len(QUERY_PHOTOS) * len(EDITS)} query files, one thread "
             "(`benchmarks/query_costs.py`; re-ranking verifies the best 100, the "
             "shortlist). The whole search is timed separately from its stages.", ""]
    lines += costs_table(costs)
    path.with_suffix(".json").write_text(json.dumps(
        {f"{name}, {n}": c for (name, n), c in costs.items()}, indent=1))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def fit(points, what):
    """Least-squares line through (x, y) points, and its values at PROJECT."""
    x, y = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    if len(x) < 2:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return {"slope": float(slope), "intercept": float(intercept), "what": what}


def projections(report):
    out = {}
    for name, sizes in report["stores"].items():
        grown = sorted((int(n), r) for n, r in sizes.items() if int(n) > 0)
        if len(grown) < 2:
            continue
        o = {}
        for mode in ("plain", "rerank"):
            m = fit([(np.log10(n), r[mode]["mAP"]) for n, r in grown], "mAP ~ log10(n)")
            t = fit([(n, r[mode]["cpu_p50_ms"]) for n, r in grown], "cpu ms ~ n")
            o[mode] = {str(n): {"mAP": round(m["intercept"] + m["slope"] * np.log10(n), 3),
                                "cpu_p50_ms": round(t["intercept"] + t["slope"] * n, 1)}
                       for n in PROJECT}
            o[mode]["fits"] = {"mAP": m, "time": t}
        b = fit([(n, r["bytes_per_image"]) for n, r in grown], "bytes ~ n")
        o["bytes_per_image"] = round(b["intercept"] + b["slope"] * PROJECT[-1])
        out[name] = o
    return out


def write_report(report, path, command):
    lines = ["# Copy detection among distractors", "", f"`{command}`: "
             f"{len(QUERY_PHOTOS) * len(EDITS)} queries by image file (extraction included), "
             f"one thread; vocabularies learned on the queries and {report['learn']} "
             f"distractors.", "",
             "| store | distractors | index | mAP | recall@100 | mAP re-ranked | recall@100 "
             "re-ranked | p50 ms (p90) | CPU p50 ms | p50 ms re-ranked (p90) | CPU p50 ms "
             "re-ranked | load | bytes / image |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, sizes in report["stores"].items():
        for n, r in sorted(sizes.items(), key=lambda kv: int(kv[0])):
            p, q = r["plain"], r["rerank"]
            lines.append(f"| {name} | {int(n):,} | {r['index']} | {p['mAP']} | "
                         f"{p['recall@100']} | {q['mAP']} | {q['recall@100']} | "
                         f"{p['p50_ms']} ({p['p90_ms']}) | {p['cpu_p50_ms']} | "
                         f"{q['p50_ms']} ({q['p90_ms']}) | {q['cpu_p50_ms']} | "
                         f"{p['load_average']}, {q['load_average']} | "
                         f"{r['bytes_per_image']:,} |")
    proj = report.get("projection") or {}
    if proj:
        lines += ["", "Projected (least-squares fits over the sizes above with distractors: "
                  "mAP against log10(distractors), CPU time against distractors; not "
                  "measured):", "",
                  "| store | distractors | mAP | mAP re-ranked | CPU p50 ms | CPU p50 ms "
                  "re-ranked |", "|---|---:|---:|---:|---:|---:|"]
        for name, o in proj.items():
            for n in PROJECT:
                lines.append(f"| {name} | {n:,} | {o['plain'][str(n)]['mAP']} | "
                             f"{o['rerank'][str(n)]['mAP']} | "
                             f"{o['plain'][str(n)]['cpu_p50_ms']} | "
                             f"{o['rerank'][str(n)]['cpu_p50_ms']} |")
    for name, other in (report.get("merged") or {}).items():
        lines += ["", f"{name}: the rows of an earlier run (`{other or 'not recorded'}`)"]
    lines += ["", f"distractor photos: {', '.join(report['distractor_photos'])}", "",
              f"build seconds: {json.dumps(report['build_s'])}"]
    path.with_suffix(".json").write_text(json.dumps(report, indent=1))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,1000,10000",
                        help="distractor counts, comma-separated (0: the queries alone)")
    parser.add_argument("--learn", type=int, default=1000,
                        help="distractors the vocabularies are learned with")
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--points-per-word", type=int, default=4)
    parser.add_argument("--no-flat", action="store_true", help="the large vocabulary only")
    parser.add_argument("--flat-preset", default="sift",
                        help="the recipe of the 1000-word series (sift, sift-fast)")
    parser.add_argument("--no-large", action="store_true", help="the 1000-word series only")
    parser.add_argument("--presets", default="sift",
                        help="presets of the large vocabulary, comma-separated: one series "
                             "of stores each, side by side (e.g. sift,sift-fast)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the stores of --out's report that this run does not "
                             "measure (another run's series)")
    parser.add_argument("--costs", action="store_true",
                        help="also time each stage of a re-ranked query in every store "
                             "(query_costs.md next to --out)")
    parser.add_argument("--hamming", type=int, metavar="BITS",
                        help="also search the large vocabulary's stores with Hamming "
                             "embedding of BITS (32 or 64) bits")
    parser.add_argument("--shortlist", type=int, default=100,
                        help="results re-ranking verifies (`features search --shortlist`)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", default=str(HERE / "_work" / "distractors"))
    parser.add_argument("--out", default=str(HERE / "results" / "distractors"))
    parser.add_argument("--keep", action="store_true", help="keep the images and stores")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    queries = work / "queries"
    if not queries.exists():
        write_copy_set(work / "queries.tmp", photos=QUERY_PHOTOS, edits=EDITS)
        (work / "queries.tmp").rename(queries)
    pool = work / "pool"
    used = write_distractors(pool, max(sizes + [args.learn]))
    recipes = {}
    for preset in [] if args.no_large else args.presets.split(","):
        config = get_preset(preset, words=args.words, tree_branching=10,
                            points_per_word=args.points_per_word, sample_per_image=1000,
                            sample_images=args.learn + 72)
        name = f"{args.words} words, vocabulary tree"
        if preset != "sift":
            name += f", {preset} (max side {config.max_side})"
        if args.shortlist != 100:
            name += f", shortlist {args.shortlist}"
        recipes[name] = config
    if not args.no_flat:
        flat = get_preset(args.flat_preset, words=1000)
        name = "1000 words, flat k-means"
        if args.flat_preset != "sift":
            name += f", {args.flat_preset} (max side {flat.max_side})"
        if args.shortlist != 100:
            name += f", shortlist {args.shortlist}"
        recipes = {name: flat, **recipes}
    path = Path(args.out)
    report = {"sizes": sizes, "learn": args.learn, "distractor_photos": used,
              "query_photos": list(QUERY_PHOTOS), "max_side": MAX_SIDE, "stores": {},
              "build_s": {}}
    command = "python benchmarks/bench_distractors.py " + " ".join(sys.argv[1:])
    costs = {}
    if args.merge and path.with_suffix(".json").exists():
        # another run's series keep their rows; this run's replace theirs
        before = json.loads(path.with_suffix(".json").read_text())
        report["merged"] = {name: before.get("command") for name in before["stores"]
                            if name not in recipes}
        report["stores"] = {name: r for name, r in before["stores"].items()
                            if name not in recipes}
        report["build_s"] = {name: t for name, t in before["build_s"].items()
                             if not name.startswith(tuple(recipes))}
    report["command"] = command
    for name, config in recipes.items():
        tag = f"{config.words}-{config.preset}"
        learned = work / f"store-{tag}-learn{args.learn}"
        t0 = time.perf_counter()
        run(config, open_source(str(image_set(work, queries, pool, args.learn))), learned,
            jobs=args.jobs, progress=False)
        report["build_s"][f"{name}, learned"] = round(time.perf_counter() - t0)
        report["stores"][name] = {}
        for n in sizes:
            out = learned if n == args.learn else work / f"store-{tag}-{n}"
            if n != args.learn:
                t0 = time.perf_counter()
                run(None, open_source(str(image_set(work, queries, pool, n))), out,
                    jobs=args.jobs, progress=False, like=learned)
                report["build_s"][f"{name}, {n}"] = round(time.perf_counter() - t0)
            result = score(out, queries, shortlist=args.shortlist)
            result.update(store_bytes(out))
            if args.costs:
                costs[(name, n)] = stage_costs(out, sorted(queries.rglob("*.jpg")))
                write_costs(costs, path.parent / "query_costs", command)
            report["stores"][name][str(n)] = result
            print(name, n, json.dumps(result), flush=True)
            if args.hamming and config.words > 1000:
                he = f"{name} + Hamming embedding, {args.hamming} bits"
                t0 = time.perf_counter()
                build_index(out, factory="Inverted", hamming=args.hamming, progress=False)
                report["build_s"][f"{he}, {n}, index"] = round(time.perf_counter() - t0)
                result = score(out, queries, shortlist=args.shortlist)
                result.update(store_bytes(out))
                report["stores"].setdefault(he, {})[str(n)] = result
                print(he, n, json.dumps(result), flush=True)
            report["projection"] = projections(report)
            write_report(report, path, command)
            if n != args.learn and not args.keep:
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(work / f"set-{n}", ignore_errors=True)
    print(write_report(report, path, command))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Copy detection among distractors: 1000 words + FAISS against a large vocabulary (a
vocabulary tree) + an inverted file.

Queries: 9 of the demo's photos (scikit-image) x 8 versions (the original and 7 edited
copies: JPEG 15, 60% crop, 12-degree rotation, half size, perspective, dark, hazy), every
one of the 72 a query whose relevant results are the 7 other versions of its photo.
Distractors: ``--distractors`` random views (a crop of 35-100% of each side, a flip, a
rotation by a multiple of 90 degrees, a scale of 0.5-1, JPEG quality 60-95) of real photos
that share no content with the queries: the demo's 9 other photos (textures among them:
brick, grass, gravel) and the photos of VLFeat's documentation
(``/usr/share/doc/libvlfeat-dev/doc/images``, Debian's libvlfeat-dev, when installed).
Two stores of the same images, ``sift`` preset, ``--jobs``:

- ``--words 1000`` (flat k-means): the index ``features index`` chooses (exact FAISS);
- ``--words W --tree-branching 10 --points-per-word P --sample-per-image 1000`` (a
  vocabulary tree; above 16,384 words the index is an inverted file).

Reported per store: mAP and recall@100 of the true copies, plain and with ``--rerank``,
and the in-process p50 query time (by key). A few hundred views of 9 photos are a small
version of issue 20's benchmark (10k to 1.28M distractors), not a substitute for it.

    python benchmarks/bench_distractors.py [--distractors 300] [--words 100000]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from features.demo import EDITS, write_copy_set  # noqa: E402
from features.pipeline import run  # noqa: E402
from features.presets import get_preset  # noqa: E402
from features.search import Searcher  # noqa: E402
from features.search.metrics import average_precision  # noqa: E402
from features.sources import open_source  # noqa: E402

QUERY_PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
                "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg")
DISTRACTOR_PHOTOS = ("brick.png", "cell.png", "clock_motion.png", "grass.png", "gravel.png",
                     "hubble_deep_field.jpg", "ihc.png", "moon.png", "text.png")
VLFEAT_IMAGES = Path("/usr/share/doc/libvlfeat-dev/doc/images")
DISTRACTORS = "zz-distractors"


def distractor_photos():
    import skimage
    data = Path(skimage.__file__).parent / "data"
    paths = [data / name for name in DISTRACTOR_PHOTOS]
    if VLFEAT_IMAGES.exists():
        paths += sorted(VLFEAT_IMAGES.glob("*.jpg"))
    out = []
    for p in paths:
        im = cv2.imread(str(p))
        if im is not None and min(im.shape[:2]) >= 100:
            out.append((p.name, im))
    return out


def write_distractors(folder, n, seed=0):
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
        s = rng.uniform(0.5, 1.0)
        view = cv2.resize(view, (max(16, int(view.shape[1] * s)), max(16, int(view.shape[0] * s))),
                          interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"d{i:06d}.jpg"), view,
                    [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 96))])
    return [name for name, _ in photos]


def score(store, k=100):
    out = {}
    with Searcher(store) as searcher:
        keys = [str(key) for key in searcher.store.keys]
        status = searcher.store.column("status")
        photo = [key.split("/", 1)[0] for key in keys]
        queries = [i for i, p in enumerate(photo) if p != DISTRACTORS and status[i] == 0]
        out["index"] = type(searcher.index).__name__
        for rerank in (False, True):
            aps, recalls, times = [], [], []
            for i in queries:
                relevant = {j for j in queries if photo[j] == photo[i] and j != i}
                t0 = time.perf_counter()
                hits = searcher.search(keys[i], k=min(len(keys) - 1, 500), rerank=rerank)
                times.append(time.perf_counter() - t0)
                flags = [h["index"] in relevant for h in hits]
                aps.append(average_precision(flags, len(relevant)))
                recalls.append(sum(flags[:k]) / len(relevant))
            out["rerank" if rerank else "plain"] = {
                "mAP": round(float(np.mean(aps)), 4),
                f"recall@{k}": round(float(np.mean(recalls)), 4),
                "p50_ms": round(1e3 * float(np.median(times)), 1)}
        out["queries"] = len(queries)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distractors", type=int, default=300)
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--points-per-word", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", default=str(HERE / "_work" / "distractors"))
    parser.add_argument("--out", default=str(HERE / "results" / "distractors"))
    args = parser.parse_args()
    work = Path(args.work)
    images = work / f"images-{args.distractors}"
    if not images.exists():
        write_copy_set(images, photos=QUERY_PHOTOS, edits=EDITS)
        write_distractors(images / DISTRACTORS, args.distractors)
    used = [name for name, _ in distractor_photos()]
    report = {"distractors": args.distractors, "distractor_photos": used,
              "query_photos": list(QUERY_PHOTOS), "stores": {}}
    recipes = {"1000 words, flat k-means": get_preset("sift", words=1000),
               f"{args.words} words, vocabulary tree (branching 10)": get_preset(
                   "sift", words=args.words, tree_branching=10,
                   points_per_word=args.points_per_word, sample_per_image=1000)}
    for name, config in recipes.items():
        out = work / f"store-{args.distractors}-{config.words}"
        t0 = time.perf_counter()
        summary = run(config, open_source(str(images)), out, jobs=args.jobs, progress=True)
        built = time.perf_counter() - t0
        result = score(out)
        result.update(images=summary.images, failed=summary.failed, build_s=round(built))
        report["stores"][name] = result
        print(name, json.dumps(result), flush=True)
    report["load_average"] = os.getloadavg()
    path = Path(args.out)
    path.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = ["# Copy detection among distractors", "",
             f"`python benchmarks/bench_distractors.py --distractors {args.distractors} "
             f"--words {args.words}`: {len(QUERY_PHOTOS) * len(EDITS)} queries, "
             f"{args.distractors} distractors", "",
             "| store | index | mAP | recall@100 | mAP reranked | recall@100 reranked | "
             "p50 ms | p50 ms reranked | build s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in report["stores"].items():
        lines.append(f"| {name} | {r['index']} | {r['plain']['mAP']} | "
                     f"{r['plain']['recall@100']} | {r['rerank']['mAP']} | "
                     f"{r['rerank']['recall@100']} | {r['plain']['p50_ms']} | "
                     f"{r['rerank']['p50_ms']} | {r['build_s']} |")
    lines += ["", f"distractor photos: {', '.join(used)}", "",
              f"load average at the end: {os.getloadavg()}"]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

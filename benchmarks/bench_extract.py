"""The `sbow` batch recipe end to end against the peer pipeline a user would assemble.

Peer: read file, OpenCV imdecode (grayscale) and INTER_AREA resize to max side 300,
VLFeat dense SIFT in C (vl_imsmooth + vl_dsift at full, half and quarter size, bin 5,
step 10, as vl_phow), FAISS exact nearest-centroid search, NumPy bincount, HDF5 writes.
Ours: `features` encode step (pass 2 and the merge into store.h5) with the sbow preset.
Both use the same 1000-word codebook, one process, one thread, on the same ImageNet-like
JPEGs, alternating runs; medians of several runs. Then `--jobs 2`, a run over the whole
corpus for the projection to ILSVRC-2012 train (1,281,167 images), and the peak RSS of the
whole job (all its processes) at two dataset sizes.

    python benchmarks/bench_extract.py [--images 20000] [--speed-images 2000] [--repeats 3]

``--speed-only`` runs the side-by-side part alone (a corpus of ``--images``, the codebook,
the alternating runs, the agreement, ``--jobs 2``) and keeps the whole-corpus run and the
peak RSS of the last full run (from results/extract.json, said so in the table's notes):

    python benchmarks/bench_extract.py --speed-only --images 2000 [--repeats 5]

``--e2e`` runs only the whole job, codebook included, on a 2,000-image corpus (a few
minutes): `features run --preset sbow --jobs 1` (sample, k-means, encode, merge, index)
against the peer script that also learns its codebook (OpenCV decode + VLFeat dense SIFT
of 200 random images, FAISS k-means on 22,000 of their descriptors, then the peer pass
above), with the quantization error of both codebooks on held-out descriptors.

    python benchmarks/bench_extract.py --e2e [--images 2000] [--repeats 3]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import faiss
import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _vlfeat import VLFeat  # noqa: E402
from corpus import corpus_stats, make_corpus  # noqa: E402
from encode_store import store_with_codebook  # noqa: E402

from features.codebook import KMEANS_TOL, quantization_error  # noqa: E402
from features.pipeline import encode_images, sample_descriptors, train_codebook  # noqa: E402
from features.presets import get_preset  # noqa: E402
from features.sources import open_source  # noqa: E402

ILSVRC_TRAIN = 1_281_167


def peer_extract(path, vl, max_side=300):
    """OpenCV decode + resize, VLFeat dense SIFT at full, half and quarter size (sbow)."""
    with open(path, "rb") as fh:
        data = fh.read()
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    h, w = gray.shape
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        gray = cv2.resize(gray, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    im = gray.astype(np.float32) / 255.0
    frames, descs = [], []
    for si, factor in enumerate((1.0, 0.5, 0.25)):
        ims = im if factor == 1.0 else cv2.resize(
            im, (max(round(im.shape[1] * factor), 1), max(round(im.shape[0] * factor), 1)),
            interpolation=cv2.INTER_AREA)
        fr, de = vl.phow(ims, sizes=(5,), step=10)
        fr[:, 0] /= ims.shape[1]
        fr[:, 1] /= ims.shape[0]
        fr[:, 2] = si
        frames.append(fr)
        descs.append(de)
    return np.concatenate(frames), np.concatenate(descs)


def peer_job(paths, vl, out_path, words=1000, sample_images=200, sample_size=22000, seed=0,
             iters=25):
    """The peer script with its codebook: descriptors of random images, FAISS k-means on a
    random subset of them, then the peer pass. Returns the centroids."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(paths), min(sample_images, len(paths)), replace=False))
    desc = np.concatenate([peer_extract(paths[i], vl)[1] for i in chosen])
    desc = desc[rng.choice(len(desc), min(sample_size, len(desc)), replace=False)]
    km = faiss.Kmeans(desc.shape[1], words, niter=iters, seed=seed)
    km.train(desc.astype(np.float32))
    peer_pipeline(paths, km.centroids, vl, out_path)
    return km.centroids


def end_to_end(args, vl):
    """The whole sbow job, codebook included, against the peer script with its codebook."""
    from features.pipeline.tasks import features_of
    from features.pipeline import run
    from features.store import Manifest
    work = args.work
    root = make_corpus(work / "corpus2k", args.images)
    stats = corpus_stats(work / "corpus2k")
    # Held-out descriptors: other crops of the same photos (another corpus seed).
    held_root = make_corpus(work / "heldout", 200, seed=1)
    config = get_preset("sbow")
    # An image whose extraction fails (a failed item of the job) gives no descriptors.
    held = [features_of(config, it)[1] for it in open_source(str(held_root))]
    held = np.concatenate([h for h in held if getattr(h, "ndim", 0) == 2])
    held = held[np.random.default_rng(0).choice(len(held), min(100000, len(held)),
                                                replace=False)]
    paths = [os.path.join(root, it.key) for it in open_source(str(root))]
    n = len(paths)
    print(f"corpus: {n} JPEGs, mean {stats['mean_kb']:.0f} KB; held out: {len(held)} "
          f"descriptors of 200 other images", flush=True)
    peer_t, ours_t, steps = [], [], []
    out = work / "e2e-ours"
    for r in range(args.repeats):
        t = time.perf_counter()
        peer_c = peer_job(paths, vl, work / "e2e-peer.h5")
        peer_t.append(time.perf_counter() - t)
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        run(config, open_source(str(root)), out, jobs=1, progress=False)
        ours_t.append(time.perf_counter() - t)
        m = Manifest(out).data["steps"]
        steps.append({"sample_images": m["sample"]["images"],
                      "sample_descriptors": m["sample"]["descriptors"],
                      "codebook_s": m["codebook"]["seconds"]})
        print(f"run {r + 1}: peer {peer_t[-1]:.1f} s, ours {ours_t[-1]:.1f} s "
              f"(k-means {steps[-1]['codebook_s']:.1f} s on {steps[-1]['sample_descriptors']} "
              f"descriptors of {steps[-1]['sample_images']} images)", flush=True)
    ours_c = np.load(out / "codebook.npy")
    peer_q, ours_q = quantization_error(peer_c, held), quantization_error(ours_c, held)
    peer_s, ours_s = float(np.median(peer_t)), float(np.median(ours_t))
    result = {"machine": {"cores": os.cpu_count(), "opencv": cv2.__version__,
                          "faiss": faiss.__version__, "vlfeat": vl.version,
                          "load_avg": os.getloadavg()},
              "corpus": stats, "images": n, "repeats": args.repeats,
              "peer_runs_s": peer_t, "ours_runs_s": ours_t, "ours_steps": steps,
              "peer_s": peer_s, "ours_s": ours_s, "ratio": peer_s / ours_s,
              "held_out_descriptors": int(len(held)),
              "peer_held_out_error": peer_q, "ours_held_out_error": ours_q}
    out_dir = HERE / "results"
    (out_dir / "extract_e2e.json").write_text(json.dumps(result, indent=1))
    st = steps[-1]
    lines = [
        "# sbow job end to end, codebook included: features vs the peer script",
        "",
        f"{n} generated ImageNet-like JPEGs (mean {stats['mean_kb']:.0f} KB), one process, "
        f"one thread, median of {args.repeats} alternating runs (load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end).",
        "",
        "- features: `features run --preset sbow --jobs 1` as `features.pipeline.run`: "
        f"sample ({st['sample_descriptors']:,} descriptors of {st['sample_images']} images: "
        f"{config.words} words x {config.points_per_word} per word), k-means (greedy "
        f"k-means++ seeding, then Lloyd until an iteration gains less than "
        f"{100 * KMEANS_TOL:g}%, at most {config.kmeans_iters} iterations; median "
        f"{np.median([s['codebook_s'] for s in steps]):.1f} s), encode, merge, index.",
        "- peer: OpenCV decode + VLFeat dense SIFT of 200 random images, FAISS k-means "
        "(1000 words, 25 iterations) on 22,000 of their descriptors, then OpenCV + VLFeat + "
        "FAISS exact search + bincount + h5py over every image.",
        "",
        "| pipeline | seconds | ratio | codebook sample | held-out quantization error |",
        "|---|---:|---:|---:|---:|",
        f"| peer | {peer_s:.1f} | 1.00 | 22,000 | {peer_q:.1f} |",
        f"| features | {ours_s:.1f} | {peer_s / ours_s:.2f} | {st['sample_descriptors']:,} | "
        f"{ours_q:.1f} |",
        "",
        f"Held-out error: mean squared distance to the nearest word of {len(held):,} dense "
        "SIFT descriptors of 200 other images (another corpus seed).",
    ]
    (out_dir / "extract_e2e.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def peer_pipeline(paths, centroids, vl, out_path, max_side=300, chunk=1000):
    """What a user would assemble from the best existing parts, written plainly."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    k = len(centroids)
    with h5py.File(out_path, "w") as f:
        dsets = {
            "words": f.create_dataset("words", (0,), np.int16, maxshape=(None,), chunks=(65536,),
                                      compression="gzip", compression_opts=1),
            "frames": f.create_dataset("frames", (0, 4), np.float32, maxshape=(None, 4),
                                       chunks=(16384, 4), compression="gzip", compression_opts=1),
            "hist": f.create_dataset("hist", (0, k), np.int32, maxshape=(None, k),
                                     chunks=(256, k), compression="gzip", compression_opts=1),
        }
        buf = {name: [] for name in dsets}
        offsets = [0]

        def flush():
            for name, parts in buf.items():
                if parts:
                    data = np.concatenate(parts)
                    d = dsets[name]
                    d.resize((d.shape[0] + len(data),) + d.shape[1:])
                    d[-len(data):] = data
                    parts.clear()

        for n, path in enumerate(paths, 1):
            frames, descs = peer_extract(path, vl, max_side)
            desc = descs.astype(np.float32)
            _, words = index.search(desc, 1)
            words = words[:, 0]
            buf["words"].append(words.astype(np.int16))
            buf["frames"].append(frames)
            buf["hist"].append(np.bincount(words, minlength=k)[None].astype(np.int32))
            offsets.append(offsets[-1] + len(words))
            if n % chunk == 0:
                flush()
        flush()
        f["offsets"] = np.array(offsets, np.int64)


def ours(config, source, codebook, out, jobs, limit):
    summary = encode_images(config, source, store_with_codebook(codebook, out), out,
                            jobs=jobs, limit=limit, progress=False)
    return summary


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def tree_peak_rss(cmd, env=None, interval=0.05):
    """Peak of the summed RSS of a command and all its descendants (sampled from /proc)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = [0]

    def rss_tree():
        children = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as fh:
                        ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
        total, todo = 0, [proc.pid]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            try:
                with open(f"/proc/{pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def watch():
        while proc.poll() is None:
            peak[0] = max(peak[0], rss_tree())
            time.sleep(interval)

    t = threading.Thread(target=watch)
    start = time.perf_counter()
    t.start()
    rc = proc.wait()
    t.join()
    if rc != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {rc}")
    return peak[0], time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--speed-images", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-sizes", type=int, nargs="*", default=[2000, 20000])
    ap.add_argument("--work", type=Path, default=HERE / "_work")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the side-by-side runs; the whole-corpus and RSS figures are "
                         "those of the last full run")
    ap.add_argument("--e2e", action="store_true",
                    help="only the whole job with its codebook against the peer's, on "
                         "--images (default 2000) images")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    vl = VLFeat()
    vl.set_num_threads(1)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.e2e:
        if args.images == 20000:
            args.images = 2000
        return end_to_end(args, vl)

    t0 = time.perf_counter()
    root = make_corpus(work / "corpus", args.images)
    stats = corpus_stats(work / "corpus")
    print(f"corpus: {stats['images']} JPEGs, mean {stats['mean_kb']:.0f} KB "
          f"(5-95%: {stats['p5_kb']:.0f}-{stats['p95_kb']:.0f} KB) "
          f"[{time.perf_counter() - t0:.0f} s]", flush=True)

    config = get_preset("sbow", shard_size=1000)
    source = open_source(str(root))
    cb_dir = work / "codebook"
    shutil.rmtree(cb_dir, ignore_errors=True)
    t = time.perf_counter()
    sample = sample_descriptors(config, source, cb_dir, progress=False)
    codebook = train_codebook(config, sample, cb_dir)
    codebook_seconds = time.perf_counter() - t
    centroids = np.load(codebook)
    print(f"codebook: {config.words} words from {len(np.load(sample))} descriptors of "
          f"{config.images_to_sample} images in {codebook_seconds:.1f} s", flush=True)

    paths = [os.path.join(root, it.key) for _, it in
             zip(range(args.speed_images), open_source(str(root)))]
    n = len(paths)
    peer_t, ours_t = [], []
    for r in range(args.repeats):
        peer_t.append(timed(peer_pipeline, paths, centroids, vl, work / "peer.h5"))
        ours_t.append(timed(ours, config, source, codebook, work / "ours", 1, n))
        print(f"run {r + 1}: peer {n / peer_t[-1]:.1f} images/s, ours {n / ours_t[-1]:.1f} "
              f"images/s", flush=True)
    peer_rate, ours_rate = n / np.median(peer_t), n / np.median(ours_t)

    # assignment agreement: our stored words against exact FAISS search of the same descriptors
    from features.pipeline.tasks import features_of
    exact = faiss.IndexFlatL2(centroids.shape[1])
    exact.add(centroids)
    same = total = 0
    with h5py.File(work / "ours" / "store.h5", "r") as f:
        offsets, words = f["offsets"][:], f["words"]
        for i, it in zip(range(200), open_source(str(root))):
            _, desc = features_of(config, it)
            _, w = exact.search(desc.astype(np.float32), 1)
            mine = words[offsets[i]:offsets[i + 1]]
            same += int((mine == w[:, 0]).sum())
            total += len(mine)
    agreement = same / total

    jobs2_t = [timed(ours, config, source, codebook, work / "ours2", 2, n)
               for _ in range(args.repeats)]
    jobs2_rate = n / np.median(jobs2_t)
    print(f"--jobs 2: {jobs2_rate:.1f} images/s", flush=True)

    out_dir = HERE / "results"
    earlier = None
    if args.speed_only:
        earlier = json.loads((out_dir / "extract.json").read_text())
        full_rate = earlier["full_corpus_jobs2_images_per_s"]
        full_images = earlier.get("full_corpus_images", earlier["corpus"]["images"])
    else:
        full_t = timed(ours, config, source, codebook, work / "full", 2, None)
        full_rate, full_images = args.images / full_t, args.images
        print(f"whole corpus, --jobs 2: {args.images} images in {full_t:.0f} s = "
              f"{full_rate:.1f} images/s", flush=True)

    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    rss = earlier["peak_rss"] if earlier else {}
    for size in ([] if earlier else args.rss_sizes):
        for jobs in (1, 2):
            out = work / f"rss-{size}-{jobs}"
            shutil.rmtree(out, ignore_errors=True)
            # the batch job's steps (the search index is sized by the collection: N x words
            # x 4 bytes, and is not part of extraction)
            steps = {}
            for step in (["extract", str(root), "-o", str(out), "--preset", "sbow"],
                         ["codebook", str(out)], ["encode", str(root), "-o", str(out)]):
                if step[0] != "codebook":
                    step += ["--limit", str(size), "--jobs", str(jobs), "-q"]
                steps[step[0]] = tree_peak_rss([sys.executable, "-m", "features", *step],
                                               env=env)
            peak = max(p_ for p_, _ in steps.values())
            seconds = sum(s_ for _, s_ in steps.values())
            rss[f"{size}/{jobs}"] = {"images": size, "jobs": jobs, "peak_rss_mb": peak / 2**20,
                                     "seconds": seconds,
                                     **{f"{k}_rss_mb": v[0] / 2**20 for k, v in steps.items()}}
            shutil.rmtree(out, ignore_errors=True)
            print(f"peak RSS, {size} images, --jobs {jobs}: {peak / 2**20:.0f} MB "
                  f"({seconds:.0f} s)", flush=True)

    result = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                    "opencv": cv2.__version__, "faiss": faiss.__version__, "vlfeat": vl.version},
        "corpus": stats, "speed_images": n, "repeats": args.repeats,
        "load_avg_end": os.getloadavg(), "speed_only": bool(earlier),
        "full_corpus_images": full_images,
        "peer_images_per_s": peer_rate, "ours_images_per_s": ours_rate,
        "ratio": ours_rate / peer_rate, "peer_runs_s": peer_t, "ours_runs_s": ours_t,
        "assignment_agreement": agreement,
        "jobs2_images_per_s": jobs2_rate, "full_corpus_jobs2_images_per_s": full_rate,
        "projected_ilsvrc_train_hours": {
            "jobs1": ILSVRC_TRAIN / ours_rate / 3600, "jobs2": ILSVRC_TRAIN / full_rate / 3600,
            "peer": ILSVRC_TRAIN / peer_rate / 3600},
        "codebook_seconds": codebook_seconds, "peak_rss": rss,
    }
    out_dir.mkdir(exist_ok=True)
    (out_dir / "extract.json").write_text(json.dumps(result, indent=1))
    p = result["projected_ilsvrc_train_hours"]
    lines = [
        "# sbow recipe end to end: features vs the assembled peer",
        "",
        f"Corpus: {stats['images']} ImageNet-like JPEGs (ILSVRC train layout), mean "
        f"{stats['mean_kb']:.0f} KB, 5-95%: {stats['p5_kb']:.0f}-{stats['p95_kb']:.0f} KB. "
        f"Speed on the first {n} images, one process, one thread, median of {args.repeats} "
        f"alternating runs. Peer: OpenCV imdecode + resize, VLFeat {vl.version} vl_imsmooth + "
        f"vl_dsift, FAISS {faiss.__version__} exact search, NumPy bincount, h5py. Load "
        f"average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared "
        "machine: the ratio, measured in one run, is what to read).",
        "",
        "| pipeline | images/s | ms/image | ratio |",
        "|---|---|---|---|",
        f"| peer (1 thread) | {peer_rate:.1f} | {1000 / peer_rate:.2f} | 1.00 |",
        f"| features (1 thread) | {ours_rate:.1f} | {1000 / ours_rate:.2f} | "
        f"{ours_rate / peer_rate:.2f} |",
        f"| features --jobs 2 | {jobs2_rate:.1f} | {1000 / jobs2_rate:.2f} | "
        f"{jobs2_rate / peer_rate:.2f} |",
        "",
        "Ratio of each alternating run (peer time / ours): "
        + ", ".join(f"{p_ / o_:.2f}" for p_, o_ in zip(peer_t, ours_t)) + ".",
        "",
        f"Visual words equal to exact assignment: {100 * agreement:.2f}%.",
        "",
        f"Whole corpus ({full_images} images) with --jobs 2"
        + (" (the last full run; this run measured only the side-by-side part)"
           if earlier else "") + f": {full_rate:.1f} images/s; "
        f"projected for ILSVRC-2012 train (1,281,167 images): {p['jobs2']:.1f} h "
        f"(1 thread: {p['jobs1']:.1f} h; peer, 1 thread: {p['peer']:.1f} h).",
        "",
        "Peak RSS (MB) of the batch job" + (" (the last full run)" if earlier else "")
        + ", summed over all its processes, per step "
        "(pass 1 samples descriptors, codebook is k-means on the sample, pass 2 encodes):",
        "",
        "| images | --jobs | extract (pass 1) | codebook | encode (pass 2) | whole job | seconds |",
        "|---|---|---|---|---|---|---|",
    ] + [f"| {v['images']} | {v['jobs']} | {v['extract_rss_mb']:.0f} | "
         f"{v['codebook_rss_mb']:.0f} | {v['encode_rss_mb']:.0f} | {v['peak_rss_mb']:.0f} | "
         f"{v['seconds']:.0f} |" for v in rss.values()]
    (out_dir / "extract.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

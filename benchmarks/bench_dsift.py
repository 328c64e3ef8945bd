"""Dense SIFT, side by side in one run: features vs VLFeat vs OpenCV.

Single thread, photos from scikit-image resized to max side 256 (area
averaging), bin sizes 4, 6, 8, 10, step 4 (vl_phow's geometry). Three
implementations compute the same frames:

* ``features``: ``features.dense_sift`` on the uint8 image (conversion to float,
  validation and the uint8 descriptors included);
* ``vlfeat``: VLFeat 0.9.21's C functions that vl_phow calls, through ctypes:
  ``vl_imsmooth_f`` then ``vl_dsift_process`` (fast mode) per size, on the
  float image; the descriptors are left in VLFeat's buffers. ``vlfeat_phow``
  adds what vl_phow delivers on top: copying the frames and descriptors out,
  the MATLAB wrapper's uint8 conversion and vl_phow's contrast thresholding.
  The ratio against ``vlfeat`` is the conservative one;
* ``opencv``: ``cv2.SIFT_create().compute`` on keypoints at the same centres,
  with ``size = 2 s / 3`` so that OpenCV's spatial bin (3 x size / 2) is ``s``
  pixels, angle 0, ``cv2.setNumThreads(1)``.

Runs are interleaved image by image (so that load on the machine hits all
three alike); each figure is the median over the repeats. Writes
benchmarks/results/dsift.json and dsift.md. Usage::

    python benchmarks/bench_dsift.py [--repeats 15] [--cv-repeats 3]

``--builds`` times instead the builds of the kernel that this CPU runs (baseline, AVX2,
AVX-512) against each other on the ``sbow`` recipe's pyramid (the photos at max side 300,
bin 5, step 10, scales 1, 0.5, 0.25, ``dense_sift_pyramid`` on the uint8 image, resizes
included), interleaved image by image with the order of the builds rotating, after checking
that they give the same bytes; writes dsift_builds.json and dsift_builds.md::

    python benchmarks/bench_dsift.py --builds [--repeats 31]
"""
import os

# single-threaded BLAS/OpenMP pools in the libraries we load, before importing
# them; OpenMP workers that wait by spinning make the threaded pass collapse as
# soon as another job holds a core, so they sleep instead
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import skimage  # noqa: E402
import skimage.data  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _vlfeat import VLFeat, load_libvl, phow_bound_offset  # noqa: E402

from features._ext import _dsift  # noqa: E402
from features.extract import dense as dense_module  # noqa: E402
from features.extract.dense import (dense_sift, dense_sift_pyramid,  # noqa: E402
                                    smoothing_sigma)

PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "coins",
          "page", "moon", "immunohistochemistry")
SIZES = (4, 6, 8, 10)
STEP = 4
MAX_SIDE = 256


def load_photos(names=PHOTOS, max_side=MAX_SIDE):
    images = {}
    for name in names:
        image = getattr(skimage.data, name)()
        if image.ndim == 3:
            image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
        height, width = image.shape
        scale = max_side / max(height, width)
        size = (round(width * scale), round(height * scale))
        images[name] = np.ascontiguousarray(
            cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    return images


def vlfeat_core(vl, image, output=False):
    """vl_imsmooth_f + vl_dsift_process per size, as vl_phow calls them."""
    height, width = image.shape
    smoothed = np.empty_like(image)
    out = []
    for size in SIZES:
        vl.imsmooth(image, smoothing_sigma(size), out=smoothed)
        off = phow_bound_offset(size, max(SIZES))
        out.append(vl.dsift(smoothed, bin_size=size, step=STEP,
                            bounds=(off, off, width - 1, height - 1), output=output))
    return out


def vlfeat_phow(vl, image, threshold=0.005):
    """vlfeat_core with the outputs copied out, the MATLAB vl_dsift's uint8
    conversion and vl_phow's thresholding."""
    descrs = []
    for frames, descr in vlfeat_core(vl, image, output=True):
        d8 = np.minimum(512.0 * descr, 255.0).astype(np.uint8)
        d8[frames[:, 2] < threshold] = 0
        descrs.append(d8)
    return np.concatenate(descrs)


def opencv_keypoints(frames):
    return [cv2.KeyPoint(float(x), float(y), float(2.0 * s / 3.0), 0.0)
            for x, y, s, _ in frames]


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def agreement(ours, theirs_frames, theirs_descr):
    frames, descr = ours
    same_frames = (len(frames) == len(theirs_frames)
                   and np.array_equal(frames[:, :3], theirs_frames[:, :3]))
    a = descr.astype(np.float64)
    b = theirs_descr.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both = (na > 0) & (nb > 0)
    cos = (a[both] * b[both]).sum(1) / (na[both] * nb[both])
    return same_frames, float(cos.mean()), float(np.percentile(cos, 1))


def run(repeats=15, cv_repeats=3, threads=2):
    cv2.setNumThreads(1)
    lib = load_libvl()
    if lib is None:
        raise SystemExit("VLFeat not found: apt-get install libvlfeat-dev")
    vl = VLFeat(lib)
    vl.set_num_threads(1)
    sift = cv2.SIFT_create()
    images = load_photos()

    per_image = {}
    for name, image in images.items():
        frames, descr = dense_sift(image, step=STEP, sizes=SIZES)
        imf = image.astype(np.float32) / 255
        parts = vlfeat_core(vl, imf, output=True)
        vl_frames = np.concatenate([
            np.column_stack([f[:, 0], f[:, 1], np.full(len(f), s), f[:, 2]])
            for (f, _), s in zip(parts, SIZES)])
        vl_descr = vlfeat_phow(vl, imf)
        same, cos_mean, cos_p1 = agreement((frames, descr), vl_frames, vl_descr)
        per_image[name] = dict(shape=list(image.shape), descriptors=len(frames),
                               same_frames_as_vlfeat=same,
                               cosine_vs_vlfeat_mean=cos_mean,
                               cosine_vs_vlfeat_p1=cos_p1,
                               keypoints=opencv_keypoints(frames), imf=imf,
                               t_ours=[], t_ours_mt=[], t_vl=[], t_vl_phow=[], t_cv=[])

    for rep in range(repeats):
        for name, image in images.items():
            rec = per_image[name]
            t, _ = timed(dense_sift, image, step=STEP, sizes=SIZES)
            rec["t_ours"].append(t)
            t, _ = timed(vlfeat_core, vl, rec["imf"])
            rec["t_vl"].append(t)
            t, _ = timed(vlfeat_phow, vl, rec["imf"])
            rec["t_vl_phow"].append(t)
            if rep < cv_repeats:
                t, (kps, cv_descr) = timed(sift.compute, image, rec["keypoints"])
                assert len(kps) == rec["descriptors"]
                rec["t_cv"].append(t)
    # the multi-threaded figure in a pass of its own, after the single-thread one
    load_before_threads = _load()
    for _ in range(repeats if threads > 1 else 0):
        for name, image in images.items():
            t, _ = timed(dense_sift, image, step=STEP, sizes=SIZES, n_threads=threads)
            per_image[name]["t_ours_mt"].append(t)

    rows = {}
    for name, rec in per_image.items():
        rows[name] = dict(
            shape=rec["shape"], descriptors=rec["descriptors"],
            ms_features=1e3 * float(np.median(rec["t_ours"])),
            ms_features_threads=(1e3 * float(np.median(rec["t_ours_mt"]))
                                 if rec["t_ours_mt"] else None),
            ms_vlfeat=1e3 * float(np.median(rec["t_vl"])),
            ms_vlfeat_phow=1e3 * float(np.median(rec["t_vl_phow"])),
            ms_opencv=1e3 * float(np.median(rec["t_cv"])),
            same_frames_as_vlfeat=rec["same_frames_as_vlfeat"],
            cosine_vs_vlfeat_mean=rec["cosine_vs_vlfeat_mean"],
            cosine_vs_vlfeat_p1=rec["cosine_vs_vlfeat_p1"])

    def total(key):
        return sum(r[key] for r in rows.values())

    n_desc = sum(r["descriptors"] for r in rows.values())
    n_img = len(rows)
    summary = dict(
        images=n_img, descriptors_per_image=n_desc / n_img,
        ms_per_image={k: total("ms_" + k) / n_img
                      for k in ("features", "vlfeat", "vlfeat_phow", "opencv")},
        descriptors_per_second={k: n_desc / (total("ms_" + k) / 1e3)
                                for k in ("features", "vlfeat", "vlfeat_phow", "opencv")},
        speedup_vs_vlfeat=total("ms_vlfeat") / total("ms_features"),
        speedup_vs_vlfeat_phow=total("ms_vlfeat_phow") / total("ms_features"),
        speedup_vs_opencv=total("ms_opencv") / total("ms_features"),
        same_frames_as_vlfeat=all(r["same_frames_as_vlfeat"] for r in rows.values()),
        cosine_vs_vlfeat_mean=float(np.mean([r["cosine_vs_vlfeat_mean"]
                                             for r in rows.values()])),
        cosine_vs_vlfeat_min_image=min(r["cosine_vs_vlfeat_mean"] for r in rows.values()),
    )
    if threads > 1:
        ms_mt = total("ms_features_threads") / n_img
        summary["threads"] = dict(n_threads=threads, openmp=_dsift.OPENMP,
                                  load_average_before=load_before_threads,
                                  ms_per_image=ms_mt,
                                  descriptors_per_second=n_desc / (ms_mt * n_img / 1e3),
                                  speedup_vs_vlfeat=total("ms_vlfeat") / (ms_mt * n_img))
    meta = dict(
        benchmark="dense SIFT, single thread", sizes=SIZES, step=STEP, max_side=MAX_SIDE,
        repeats=repeats, opencv_repeats=cv_repeats, statistic="median per image",
        opencv_keypoint_size="2 * bin_size / 3", python=platform.python_version(),
        numpy=np.__version__, opencv=cv2.__version__, vlfeat=vl.version,
        scikit_image=skimage.__version__, machine=platform.machine(),
        cpu=_cpu_name(), cpus=os.cpu_count(),
        load_average=_load())
    return dict(meta=meta, summary=summary, images=rows)


def _load():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def to_markdown(result):
    m, s = result["meta"], result["summary"]
    ms, dps = s["ms_per_image"], s["descriptors_per_second"]
    lines = [
        "# Dense SIFT benchmark",
        "",
        f"Single thread; {s['images']} scikit-image photos at max side {m['max_side']}, "
        f"bin sizes {', '.join(map(str, m['sizes']))}, step {m['step']} "
        f"(~{s['descriptors_per_image']:.0f} descriptors per image); median of "
        f"{m['repeats']} runs ({m['opencv_repeats']} for OpenCV), interleaved. "
        f"CPU: {m['cpu']} ({m['cpus']} cores, load average "
        f"{', '.join(f'{x:.1f}' for x in m['load_average'] or [])}). "
        f"VLFeat {m['vlfeat']}, OpenCV {m['opencv']}, NumPy {m['numpy']}, "
        f"Python {m['python']}.",
        "",
        "| implementation | ms / image | descriptors / s | features is faster by |",
        "| --- | ---: | ---: | ---: |",
        f"| features `dense_sift` | {ms['features']:.2f} | {dps['features']:,.0f} | |",
        f"| VLFeat `vl_imsmooth_f` + `vl_dsift_process` (C only) | "
        f"{ms['vlfeat']:.2f} | {dps['vlfeat']:,.0f} | {s['speedup_vs_vlfeat']:.1f}x |",
        f"| VLFeat, output copied, uint8 and thresholded as vl_phow | "
        f"{ms['vlfeat_phow']:.2f} | {dps['vlfeat_phow']:,.0f} | "
        f"{s['speedup_vs_vlfeat_phow']:.1f}x |",
        f"| OpenCV `SIFT.compute` on the same grid | {ms['opencv']:.2f} | "
        f"{dps['opencv']:,.0f} | {s['speedup_vs_opencv']:.1f}x |",
    ]
    if "threads" in s:
        t = s["threads"]
        note = "" if t["openmp"] else " (kernel built without OpenMP: runs serially)"
        load = t["load_average_before"]
        lines += ["", f"With `n_threads={t['n_threads']}`{note}: {t['ms_per_image']:.2f} ms "
                      f"per image, {t['descriptors_per_second']:,.0f} descriptors/s, "
                      f"{t['speedup_vs_vlfeat']:.1f}x VLFeat's single thread"
                      + (f" (1-minute load average before this pass: {load[0]:.1f} on "
                         f"{m['cpus']} cores; threads only help with idle cores)."
                         if load else ".")]
    lines += [
        "",
        f"Agreement with VLFeat: same frames on every image: "
        f"{'yes' if s['same_frames_as_vlfeat'] else 'NO'}; mean cosine similarity "
        f"of the uint8 descriptors {s['cosine_vs_vlfeat_mean']:.5f} (lowest image "
        f"{s['cosine_vs_vlfeat_min_image']:.5f}).",
        "",
        "| image | size | descriptors | features ms | VLFeat ms | OpenCV ms | cosine |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in result["images"].items():
        lines.append(f"| {name} | {r['shape'][1]}x{r['shape'][0]} | {r['descriptors']} | "
                     f"{r['ms_features']:.2f} | {r['ms_vlfeat']:.2f} | "
                     f"{r['ms_opencv']:.1f} | {r['cosine_vs_vlfeat_mean']:.5f} |")
    lines += ["", "Generated by `python benchmarks/bench_dsift.py`.", ""]
    return "\n".join(lines)


SBOW_MAX_SIDE = 300


def run_builds(repeats=31):
    """The sbow pyramid with each build of the kernel, side by side (see the module doc)."""
    builds = dense_module._kernel_builds()
    images = load_photos(max_side=SBOW_MAX_SIDE)
    names = list(builds)
    kernel = dense_module._kernel
    times = {name: {image: [] for image in images} for name in names}
    identical = True
    try:
        for name, image in images.items():
            outputs = []
            for build in names:
                dense_module._kernel = lambda module=builds[build]: module
                outputs.append(dense_sift_pyramid(image))
            identical &= all(a.tobytes() == b.tobytes()
                             for other in outputs[1:] for a, b in zip(outputs[0], other))
        for rep in range(repeats):
            for k, (name, image) in enumerate(images.items()):
                shift = (rep + k) % len(names)
                for build in names[shift:] + names[:shift]:
                    dense_module._kernel = lambda module=builds[build]: module
                    t, _ = timed(dense_sift_pyramid, image)
                    times[build][name].append(t)
    finally:
        dense_module._kernel = kernel
    ms = {build: 1e3 * sum(float(np.median(t)) for t in per_image.values()) / len(images)
          for build, per_image in times.items()}
    per_image = {name: {build: 1e3 * float(np.median(times[build][name])) for build in names}
                 for name in images}
    meta = dict(benchmark="dense SIFT builds, sbow pyramid, single thread",
                max_side=SBOW_MAX_SIDE, bin_size=5, step=10, scales=[1.0, 0.5, 0.25],
                repeats=repeats, statistic="median per image, summed",
                python=platform.python_version(), numpy=np.__version__,
                machine=platform.machine(), cpu=_cpu_name(), cpus=os.cpu_count(),
                load_average=_load())
    summary = dict(images=len(images), bit_identical=bool(identical), ms_per_image=ms,
                   speedup_vs_baseline={b: ms["baseline"] / ms[b] for b in names})
    return dict(meta=meta, summary=summary, images=per_image)


def builds_to_markdown(result):
    m, s = result["meta"], result["summary"]
    lines = [
        "# Dense SIFT kernel builds",
        "",
        f"`dense_sift_pyramid` as the sbow recipe runs it (max side {m['max_side']}, bin "
        f"{m['bin_size']}, step {m['step']}, scales 1, 0.5, 0.25; resizes included), single "
        f"thread, {s['images']} scikit-image photos; median of {m['repeats']} runs per image, "
        f"the builds interleaved. CPU: {m['cpu']} ({m['cpus']} cores, load average "
        f"{', '.join(f'{x:.1f}' for x in m['load_average'] or [])}). Same bytes from every "
        f"build: {'yes' if s['bit_identical'] else 'NO'}.",
        "",
        "| build | ms / image | faster than the baseline by |",
        "| --- | ---: | ---: |",
    ]
    for build, ms in s["ms_per_image"].items():
        lines.append(f"| {build} | {ms:.3f} | {s['speedup_vs_baseline'][build]:.2f}x |")
    lines += ["", "Generated by `python benchmarks/bench_dsift.py --builds`.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs per image (default 15; 31 with --builds)")
    parser.add_argument("--cv-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2,
                        help="also time dense_sift with this many threads (1: skip)")
    parser.add_argument("--builds", action="store_true",
                        help="time the kernel's builds against each other (sbow pyramid)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.builds:
        result = run_builds(args.repeats or 31)
        stem, markdown = "dsift_builds", builds_to_markdown(result)
    else:
        result = run(args.repeats or 15, args.cv_repeats, args.threads)
        stem, markdown = "dsift", to_markdown(result)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()

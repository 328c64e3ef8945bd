"""ImageNet-like JPEG corpora generated from the photos scikit-image ships.

Layout and sizes follow ILSVRC-2012 train: ``train/<wnid>/<wnid>_<n>.JPEG``, mostly
500x375 and similar shapes, 20 to 150 KB each. Each image is a random crop of a shipped
photo, flipped, jittered in brightness and contrast, with sensor-like noise (what gives
real photos their JPEG sizes), at a random JPEG quality. Nothing is committed: the
corpus is written under ``benchmarks/_work`` and reused by later runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from joblib import Parallel, delayed

from features.demo import PHOTOS, load_photo

# the JPEG qualities drawn from (low inclusive, high exclusive): a mean of 55 KB per image,
# about half of ILSVRC-2012 train's (its 138 GB archive); (92, 99) gives about 100 KB
QUALITY = (80, 96)

SHAPES = [((500, 375), 0.5), ((375, 500), 0.2), ((500, 333), 0.15), ((500, 500), 0.08),
          ((640, 480), 0.04), ((800, 600), 0.03)]


def quality_tag(quality) -> str:
    """The suffix that tells a corpus of other JPEG qualities (its folder, its codebook):
    "" for ``QUALITY``, else "-q92-99"."""
    return "" if tuple(quality) == QUALITY else "-q{}-{}".format(*quality)


def quality_option(quality) -> str:
    """The benchmarks' command-line option for ``quality`` ("" for ``QUALITY`` or None:
    results written before the option)."""
    return "" if quality is None or tuple(quality) == QUALITY else " --quality {} {}".format(
        *quality)


def add_quality_argument(parser):
    parser.add_argument("--quality", type=int, nargs=2, default=QUALITY, metavar=("LOW", "HIGH"),
                        help="JPEG qualities of the corpus (92 99: about 100 KB per image, near "
                             "ILSVRC-2012's 110; the default about 55 KB)")


def _image(photo, rng, noise, quality=QUALITY):
    h, w = photo.shape[:2]
    (tw, th) = SHAPES[rng.choice(len(SHAPES), p=[p for _, p in SHAPES])][0]
    aspect = tw / th
    area = rng.uniform(0.35, 1.0) * h * w
    cw = int(min(w, np.sqrt(area * aspect)))
    ch = int(min(h, cw / aspect))
    cw = int(ch * aspect)
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    img = cv2.resize(photo[y0:y0 + ch, x0:x0 + cw], (tw, th), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    # brightness/contrast jitter and sensor noise; the noise is a random window of one shared
    # field, as drawing fresh Gaussian noise per image would dominate the generation time
    gain, bias = rng.uniform(0.7, 1.2), rng.uniform(-25, 25)
    ny, nx = rng.integers(0, noise.shape[0] - th + 1), rng.integers(0, noise.shape[1] - tw + 1)
    strength = np.float32(rng.uniform(0.6, 1.6))
    img = img.astype(np.float32) * np.float32(gain) + np.float32(bias)
    img += noise[ny:ny + th, nx:nx + tw] * strength
    img = np.clip(img, 0, 255).astype(np.uint8)
    q = int(rng.integers(*quality))
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    return data.tobytes()


def _write_block(root, photos, start, stop, n_classes, seed, quality=QUALITY):
    sizes = []
    noise = np.random.default_rng([seed, start, 1]).normal(0, 5, (1000, 1000, 3)).astype(np.float32)
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        data = _image(photos[int(rng.integers(len(photos)))], rng, noise, quality)
        _path(root, i, n_classes).write_bytes(data)
        sizes.append(len(data))
    return sizes


def _path(root, i, n_classes):
    wnid = f"n{10000000 + i % n_classes:08d}"
    return root / "train" / wnid / f"{wnid}_{i}.JPEG"


def _drop_beyond(root, n_images):
    """Delete the images numbered n_images and up that an earlier, larger corpus (or one
    cut short) left in the folder: a job over the folder would see them all."""
    train = root / "train"
    if not train.is_dir():
        return
    for folder in train.iterdir():
        for f in folder.glob(f"{folder.name}_*.JPEG"):
            if int(f.stem.rsplit("_", 1)[1]) >= n_images:
                f.unlink()


def make_corpus(root, n_images, *, n_classes=100, seed=0, jobs=2, grow=False,
                quality=QUALITY) -> Path:
    """Write (or reuse) a corpus of ``n_images`` JPEGs under ``root/train``.

    ``grow``: a smaller corpus of the same seed and classes already there is extended
    rather than written again (its images are those a corpus of ``n_images`` starts with:
    each image and each block's noise field are seeded by their position). ``quality``:
    the range of JPEG qualities (``QUALITY``, or (92, 99) for about 100 KB per image,
    near ILSVRC-2012's 110)."""
    root = Path(root)
    stamp = root / "corpus.json"
    want = {"n_images": n_images, "n_classes": n_classes, "seed": seed, "version": 1}
    if tuple(quality) != QUALITY:    # the stamps of default corpora stay as they were
        want["quality"] = list(quality)
    have = json.loads(stamp.read_text()).get("spec") if stamp.exists() else None
    _drop_beyond(root, n_images)
    if have == want:
        return root / "train"
    block = 500
    start = 0
    same_kind = have is not None and {k: v for k, v in have.items() if k != "n_images"} == {
        k: v for k, v in want.items() if k != "n_images"}
    if grow and same_kind and have["n_images"] < n_images:
        start = have["n_images"] // block * block
    stamp.unlink(missing_ok=True)
    if grow and same_kind and have["n_images"] > n_images:
        start = n_images // block * block   # a larger corpus starts with these images
    for c in range(n_classes):
        (root / "train" / f"n{10000000 + c:08d}").mkdir(parents=True, exist_ok=True)
    photos = [load_photo(p) for p in PHOTOS]
    kept = [np.array([_path(root, i, n_classes).stat().st_size for i in range(start)], np.int64)]
    # a pool that ends with the call: loky's reusable workers would idle for 300 s and end
    # inside whatever the caller times next, their CPU charged to it (bench_scale's
    # 300,000-image run counted the corpus's ~550 s of CPU in its encode step)
    parts = Parallel(n_jobs=jobs, backend="multiprocessing")(
        delayed(_write_block)(root, photos, s, min(s + block, n_images), n_classes, seed,
                              tuple(quality))
        for s in range(start, n_images, block))
    sizes = np.concatenate(kept + [np.asarray(p, np.int64) for p in parts])
    stats = {"images": int(len(sizes)), "mean_kb": float(sizes.mean() / 1024),
             "p5_kb": float(np.percentile(sizes, 5) / 1024),
             "p95_kb": float(np.percentile(sizes, 95) / 1024),
             "total_mb": float(sizes.sum() / 2**20)}
    stamp.write_text(json.dumps({"spec": want, "stats": stats}, indent=1))
    return root / "train"


def corpus_stats(root) -> dict:
    return json.loads((Path(root) / "corpus.json").read_text())["stats"]

"""The embedded demo data: a copy-detection set built from the real photos that
scikit-image ships, each photo with edited copies.

Each photo becomes a class folder holding the original and seven copies: JPEG quality 15,
a 60% crop, a 12-degree rotation, half size, a perspective warp with darkening, a dark copy
(grey levels squeezed into 85-131, as an underexposed shot) and a hazy one (35% of the
contrast, under a light veil).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .exceptions import ParameterError

PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png",
          "clock_motion.png", "coffee.png", "coins.png", "grass.png", "gravel.png",
          "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "page.png",
          "retina.jpg", "rocket.jpg", "text.png")
EDITS = ("original", "jpeg15", "crop60", "rotate12", "half", "perspective", "dark", "haze")
# Dark and hazy copies squeeze every contrast of the photo by the same factor: a detector
# with an absolute contrast threshold finds none or a few of the original's keypoints.
DARK_LEVELS = (85, 131)
HAZE_CONTRAST, HAZE_VEIL = 0.35, 215


def photo_dir() -> Path:
    import skimage
    return Path(os.path.dirname(skimage.__file__)) / "data"


def load_photo(name) -> np.ndarray:
    """A shipped photo as a BGR uint8 array (grayscale photos become 3 equal channels)."""
    from skimage.io import imread  # quieter than cv2 on these PNGs' ICC profiles
    path = photo_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"scikit-image photo {name} not found in {photo_dir()}")
    image = np.asarray(imread(path))
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    return np.ascontiguousarray(image[:, :, 2::-1])


def edited_copies(image, rng) -> dict[str, tuple[np.ndarray, int]]:
    """The original and its copies as {edit: (BGR image, JPEG quality)}, in the order of
    ``EDITS`` (the random draws of one edit do not depend on the others being written)."""
    h, w = image.shape[:2]
    ch, cw = int(round(0.6 * h)), int(round(0.6 * w))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 12.0, 1.0)
    jitter = rng.uniform(0.04, 0.12, size=(4, 2)) * [w, h]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32(src + jitter * [[1, 1], [-1, 1], [-1, -1], [1, -1]])
    warp = cv2.warpPerspective(image, cv2.getPerspectiveTransform(src, dst), (w, h),
                               borderMode=cv2.BORDER_REPLICATE)
    return {
        "original": (image, 92),
        "jpeg15": (image, 15),
        "crop60": (image[y0:y0 + ch, x0:x0 + cw], 92),
        "rotate12": (cv2.warpAffine(image, rot, (w, h), borderMode=cv2.BORDER_CONSTANT), 92),
        "half": (cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA), 92),
        "perspective": (np.clip(warp.astype(np.float32) * 0.6, 0, 255).astype(np.uint8), 92),
        "dark": (_affine(image, (DARK_LEVELS[1] - DARK_LEVELS[0]) / 255, DARK_LEVELS[0]), 92),
        "haze": (_affine(image, HAZE_CONTRAST, (1 - HAZE_CONTRAST) * HAZE_VEIL), 92),
    }


def _affine(image, gain, offset):
    """``gain * image + offset``, rounded, as uint8."""
    return np.clip(np.rint(image.astype(np.float32) * gain + offset), 0, 255).astype(np.uint8)


def write_copy_set(out, photos=PHOTOS, seed=0, edits=EDITS) -> Path:
    """Write ``out/<photo>/<edit>.jpg`` for every photo and each of ``edits`` (a subset of
    ``EDITS``; a copy is the same whichever others are written); returns ``out``."""
    unknown = set(edits) - set(EDITS)
    if unknown:
        raise ParameterError(f"edits must be among {EDITS}, got {sorted(unknown)}", "edits")
    out = Path(out)
    rng = np.random.default_rng(seed)
    for name in photos:
        stem = Path(name).stem
        (out / stem).mkdir(parents=True, exist_ok=True)
        for edit, (image, quality) in edited_copies(load_photo(name), rng).items():
            if edit not in edits:
                continue
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError(f"cannot encode {stem}/{edit}")
            (out / stem / f"{edit}.jpg").write_bytes(data.tobytes())
    return out


def run_demo(out="features-demo", *, jobs=1, progress=True, query_edit="perspective",
             query_photo="chelsea") -> int:
    """Write the copy-detection set, run the `sift` recipe on it, and print a query's results
    and the mean average precision with every image as a query, plain and re-ranked."""
    from .search.metrics import retrieval_map
    from .pipeline import run
    from .presets import get_preset
    from .search import Searcher
    from .sources import open_source

    out = Path(out)
    images = write_copy_set(out / "images")
    n = len(PHOTOS) * len(EDITS)
    print(f"demo data: {n} images ({len(PHOTOS)} scikit-image photos x {len(EDITS)} versions: "
          f"{', '.join(EDITS)}) in {images}")
    config = get_preset("sift", words=1000)
    summary = run(config, open_source(str(images)), out / "store", jobs=jobs, progress=progress)
    print(f"store: {summary.store} ({summary.images} images, {summary.failed} failed)")
    query = images / query_photo / f"{query_edit}.jpg"
    with Searcher(out / "store") as searcher:
        hits = searcher.search(searcher.query(str(query)), k=8)
        print(f"\nquery: {query}")
        for rank, hit in enumerate(hits, 1):
            print(f"  {rank}. {hit['score']:.3f}  {hit['key']}")
        mean_ap, _ = retrieval_map(searcher)
        reranked, _ = retrieval_map(searcher, rerank=True)
    print(f"\ncopy detection, every image as a query against all others: mAP = {mean_ap:.3f}, "
          f"with --rerank {reranked:.3f}")
    print(f"try: features search {out / 'store'} {query} -k 5")
    return 0

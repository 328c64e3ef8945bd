"""The descriptors a store's models are learned from (``features aggregate``).

:func:`training_rows` gives a model the rows it wants (:mod:`features.encodings.training`
says how many), seeded so that a rerun learns the same models:

1. the codebook's sample (``sample.npy``), when it holds that many;
2. else more of the descriptors of the images that sample was drawn from (pass 1 keeps at
   most ``sample_per_image`` of each, then ``words x points_per_word`` in all): a seeded
   order of those images and as few descriptors of each as gives the rows wanted (spread
   over as many images as possible, at most about :data:`MAX_IMAGES` read), read from the
   store, or extracted again from the source for a store kept without them (when the
   source is given). Never other images: the sampled images are the only ones a model saw,
   which ``features baseline`` never scores (on a source with splits, they are ``train``
   images);
3. else whichever of the two holds more: all there is (``--sample-images`` draws from more
   images).

With ``positions`` (a Fisher vector augmented by positions, ``xy_weight``), each row comes
with its centred position in its image (``features.encodings.positions``); the codebook's
sample keeps none, so the rows are drawn as in 2. whatever the sample holds.

What the rows are (how many, from how many images, from where) is returned with them, and
kept with the model it learns (:func:`TrainingRows.attrs`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..codebook import subsample_rows
from ..codebook.sample import sample_priority
from ..encodings.positions import centred_positions
from ..exceptions import StoreError
from ..store import OK, Manifest, Store
from ..store.layout import SAMPLE_FILE
from .runner import batched, limited, run_tasks
from .tasks import sample_batch

__all__ = ["TrainingRows", "training_rows", "sampled_images"]

# Images read for a training set drawn from the store (one read, or one extraction, each).
MAX_IMAGES = 5000


@dataclass
class TrainingRows:
    """Descriptor rows a model is learned from, and where they come from."""
    x: np.ndarray          # (n, d)
    images: int            # the images they were drawn from (0: unknown)
    origin: str            # "the codebook sample", "the store's descriptors", ...
    image_of: np.ndarray | None = None    # each row's image (None: unknown)
    xy: np.ndarray | None = None          # (n, 2) centred positions (None: not drawn)

    def __len__(self):
        return len(self.x)

    def take(self, rows, seed) -> "TrainingRows":
        """A seeded choice of at most ``rows`` of them, in their order."""
        if len(self.x) <= rows:
            return self
        pick = np.sort(np.random.default_rng([seed, 5]).choice(len(self.x), rows,
                                                                 replace=False))
        xy = None if self.xy is None else self.xy[pick]
        if self.image_of is None:
            return TrainingRows(np.asarray(self.x[pick]), self.images, self.origin, xy=xy)
        image_of = self.image_of[pick]
        return TrainingRows(np.asarray(self.x[pick]), len(np.unique(image_of)), self.origin,
                            image_of, xy)

    def describe(self) -> str:
        of = f" of {self.images:,} images" if self.images else ""
        return f"{len(self.x):,} descriptors{of} ({self.origin})"

    def attrs(self) -> dict:
        """What a model records of its training set."""
        return {"rows": int(len(self.x)), "images": int(self.images),
                "learned_from": self.describe()}


def training_rows(store_dir, wanted, seed, *, source=None, limit=None, jobs=1,
                  positions=False) -> TrainingRows:
    """``wanted`` descriptor rows of the store (fewer when it holds fewer; see the module
    doc). ``source`` (with its ``limit``): the store's source, to extract descriptors again
    from a store kept without them. ``positions``: the rows' centred positions too
    (``xy``), drawn from the store's images (the sample has none)."""
    store_dir = Path(store_dir)
    if positions:
        drawn = _from_store(store_dir, wanted, seed, source, limit, jobs, positions=True)
        if drawn is None:
            raise StoreError(f"{store_dir} has neither descriptors nor a source to draw "
                             f"descriptors and their positions from (xy_weight); give --source")
        return drawn
    path = store_dir / SAMPLE_FILE
    sample = np.load(path, mmap_mode="r") if path.exists() else None
    if sample is not None and len(sample) >= wanted:
        return TrainingRows(_subset(sample, wanted, seed), _sample_images(store_dir),
                            "the codebook sample")
    drawn = _from_store(store_dir, wanted, seed, source, limit, jobs)
    if drawn is not None and (sample is None or len(drawn) > len(sample)):
        return drawn
    if sample is None:
        raise StoreError(f"{store_dir} has no descriptor sample ({SAMPLE_FILE}) nor "
                         f"descriptors to learn models from; run `features extract` first")
    return TrainingRows(np.asarray(sample), _sample_images(store_dir), "the codebook sample")


def _subset(x, rows, seed):
    if len(x) > rows:
        pick = np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))
        return np.asarray(x[pick])
    return np.asarray(x)


def _sample_images(store_dir) -> int:
    try:
        return int((Manifest(store_dir).data.get("steps", {}).get("sample") or {})
                   .get("images", 0))
    except (StoreError, ValueError, TypeError):
        return 0


def _from_store(store_dir, wanted, seed, source, limit, jobs, positions=False):
    """Rows drawn from the store's images (None when it has neither descriptors nor a
    source to extract them from); with ``positions``, their centred positions too."""
    with Store(store_dir) as s:
        h5 = s.h5
        offsets = h5["offsets"][:]
        counts = np.diff(offsets)
        sampled = sampled_images(s)
        eligible = sampled[(s.column("status")[sampled] == OK) & (counts[sampled] > 0)]
        if not len(eligible) or ("descriptors" not in h5 and source is None):
            return None
        # a seeded order of the images, and at most per_image rows of each: spread over
        # as many images as there are (the descriptors of one image are alike), yet read
        # from at most about MAX_IMAGES of them
        per_image = max(_cap(counts[eligible], wanted), -(-wanted // MAX_IMAGES))
        order = np.random.default_rng([seed, 3]).permutation(eligible)
        taken = np.cumsum(np.minimum(counts[order], per_image))
        chosen = np.sort(order[:int(np.searchsorted(taken, wanted)) + 1])
        keys = s.keys
        units = s.config.frame_units
        if "descriptors" in h5:
            ds, fr = h5["descriptors"], h5["frames"]
            widths, heights = s.column("width"), s.column("height")
            parts, where = [], []
            for i in chosen:
                rows = subsample_rows(int(counts[i]), per_image, str(keys[i]), seed)
                parts.append(ds[offsets[i]:offsets[i + 1]][rows])
                if positions:
                    frames = fr[offsets[i]:offsets[i + 1]][rows]
                    where.append(centred_positions(frames, [0, len(frames)], widths[i:i + 1],
                                                   heights[i:i + 1], units))
            origin = "the store's descriptors of the sampled images"
        else:
            got = _extract(s.config.replace(sample_per_image=per_image), source, limit,
                           {str(keys[i]) for i in chosen}, jobs, positions)
            parts = [p[0] for p in got]
            where = [p[1] for p in got] if positions else []
            origin = "descriptors extracted again from the source, of the sampled images"
    if not parts:
        return None
    x = np.concatenate(parts)
    xy = np.concatenate(where) if positions else None
    image_of = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    if len(x) > wanted:
        pick = np.sort(np.random.default_rng([seed, 4]).choice(len(x), wanted, replace=False))
        x, image_of = x[pick], image_of[pick]
        xy = None if xy is None else xy[pick]
    return TrainingRows(np.ascontiguousarray(x), len(np.unique(image_of)), origin, image_of,
                        xy)


def sampled_images(store) -> np.ndarray:
    """Rows of the images pass 1 drew the codebook's sample from, as it chose them: the
    ``config.images_to_sample`` images of smallest :func:`sample_priority` among the
    store's images (its ``train`` split when the codebook records ``sample_splits =
    "train"``; none for a store encoded ``--like`` another, which learns no models)."""
    h5 = store.h5
    splits = str(h5["codebook"].attrs.get("sample_splits", "all")) if "codebook" in h5 \
        else "none"
    if splits == "none":
        return np.zeros(0, np.int64)
    candidates = np.arange(store.n_images)
    if splits == "train" and "images/split" in h5:
        candidates = np.flatnonzero(h5["images/split"].asstr()[:] == "train")
    k = store.config.images_to_sample
    if k >= len(candidates):
        return candidates
    keys, seed = store.keys, store.config.seed
    priority = np.array([sample_priority(str(keys[i]), seed) for i in candidates])
    return np.sort(candidates[np.argsort(priority, kind="stable")[:k]])


def _cap(counts, wanted) -> int:
    """The smallest number of rows per image that gives ``wanted`` rows of images of
    ``counts`` rows (all of the largest, when they hold fewer)."""
    lo, hi = 1, int(counts.max())
    while lo < hi:
        mid = (lo + hi) // 2
        if int(np.minimum(counts, mid).sum()) >= wanted:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _extract(config, source, limit, keys, jobs, positions=False):
    """(descriptors, centred positions or None) of the source's images named ``keys`` (at
    most ``config.sample_per_image`` of each), in key order."""
    items = [it for it in limited(source, limit) if it.key in keys]
    parts = []
    for got, _failed in run_tasks(sample_batch, ((config, b, positions)
                                                 for b in batched(items, 16)), jobs):
        parts.extend(got)
    return [p[1:] if positions else (p[1], None) for p in sorted(parts, key=lambda p: p[0])]

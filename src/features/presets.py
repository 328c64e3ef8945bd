"""Named recipes. A preset is a whole configuration; every field can be overridden.

The configuration a store was built with is saved in the store (JSON) and read back
by every later step, so `features search` quantizes a query exactly as the
collection was quantized. A field missing from a saved configuration takes its default
here, so a field added later has as its default what stores written before it did.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .exceptions import ParameterError

EXTRACTORS = ("sift", "dense", "dense-pyramid")   # implemented in features.extract
CONTRAST_MEASURES = ("spread", "spread-gradient")  # features.extract.contrast


@dataclass(frozen=True)
class Config:
    preset: str = "sift"
    extractor: str = "sift"
    max_side: int = 640
    # sparse DoG SIFT (OpenCV)
    rootsift: bool = True
    max_keypoints: int = 2000
    peak_threshold: float = 0.04
    # the threshold relative to the image's own contrast (features.extract.contrast): on in
    # the sift preset; False, the absolute threshold, is what recipes stored before this
    # field existed meant, so their stores' queries are extracted as their images were
    relative_contrast: bool = False
    # how it measures the contrast (CONTRAST_MEASURES): "spread-gradient"
    # in the sift presets; "spread" is what recipes stored before this field existed meant
    contrast_measure: str = "spread"
    edge_threshold: float = 10.0
    # dense SIFT
    step: int = 4
    sizes: tuple = (4, 6, 8, 10)
    magnif: float = 6.0
    dense_contrast_threshold: float = 0.005
    scales: tuple = (1.0, 0.5, 0.25)
    # codebook: k-means on a sample of words x points_per_word descriptors (FAISS's
    # "points per centroid"), at most sample_per_image from each sampled image; the
    # number of images sampled follows (sample_images overrides it)
    words: int = 1000
    points_per_word: int = 128
    sample_per_image: int = 200
    sample_images: int | None = None
    kmeans_iters: int = 25
    # large vocabularies: a vocabulary tree of hierarchical k-means (features.codebook.tree)
    # with this many children per node, tree_depth levels (0: the fewest that hold words);
    # 0 branches: flat k-means, what stores written before these fields used
    tree_branching: int = 0
    tree_depth: int = 0
    seed: int = 0
    # encoding
    tfidf: bool = True
    power: float = 0.5
    # store and job: frame x, y and size in pixels of the original image, or x / width,
    # y / height and size / max(width, height) ("normalized", as the ILSVRC-2010 devkit)
    frame_units: str = "pixels"
    store_descriptors: bool = True
    shard_size: int = 1000
    failure_budget: float = 0.01

    def __post_init__(self):
        _check(self.extractor in EXTRACTORS, "extractor", self.extractor, f"one of {EXTRACTORS}")
        _check(self.max_side is None or self.max_side >= 16, "max_side", self.max_side, ">= 16")
        _check(self.words >= 2, "words", self.words, ">= 2")
        _check(self.step >= 1, "step", self.step, ">= 1")
        _check(len(self.sizes) >= 1 and all(s >= 1 for s in self.sizes), "sizes", self.sizes,
               "one or more bin sizes >= 1")
        _check(self.points_per_word >= 1, "points_per_word", self.points_per_word, ">= 1")
        _check(self.sample_images is None or self.sample_images >= 1, "sample_images",
               self.sample_images, ">= 1 (or None: words x points_per_word / sample_per_image)")
        _check(self.sample_per_image >= 1, "sample_per_image", self.sample_per_image, ">= 1")
        _check(self.kmeans_iters >= 1, "kmeans_iters", self.kmeans_iters, ">= 1")
        _check(self.tree_branching == 0 or self.tree_branching >= 2, "tree_branching",
               self.tree_branching, ">= 2 (or 0: flat k-means)")
        _check(self.tree_depth >= 0, "tree_depth", self.tree_depth, ">= 0 (0: the fewest levels)")
        _check(self.tree_branching or not self.tree_depth, "tree_depth", self.tree_depth,
               "0 without tree_branching (a depth is that of a vocabulary tree)")
        if self.tree_branching and self.tree_depth:
            _check(self.tree_branching ** self.tree_depth >= self.words, "tree_depth",
                   self.tree_depth, f"large enough for {self.words} words with "
                   f"{self.tree_branching} branches ({self.tree_branching}^depth >= words)")
        _check(self.shard_size >= 1, "shard_size", self.shard_size, ">= 1")
        _check(0.0 <= self.failure_budget <= 1.0, "failure_budget", self.failure_budget,
               "between 0 and 1")
        _check(0.0 < self.power <= 1.0, "power", self.power, "in (0, 1]")
        _check(self.frame_units in ("pixels", "normalized"), "frame_units", self.frame_units,
               "'pixels' or 'normalized'")
        _check(self.contrast_measure in CONTRAST_MEASURES, "contrast_measure",
               self.contrast_measure, "'spread' or 'spread-gradient'")
        _check(self.max_keypoints >= 0, "max_keypoints", self.max_keypoints, ">= 0")

    @property
    def sample_size(self) -> int:
        """Descriptors wanted for the codebook: words x points_per_word."""
        return self.words * self.points_per_word

    @property
    def images_to_sample(self) -> int:
        """Images sampled for the codebook: ``sample_images`` if set, else enough images
        for ``sample_size`` descriptors at ``sample_per_image`` each."""
        if self.sample_images is not None:
            return self.sample_images
        return -(-self.sample_size // self.sample_per_image)

    def replace(self, **changes) -> "Config":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ParameterError(f"unknown configuration option(s): {', '.join(sorted(unknown))}")
        for name in ("sizes", "scales"):
            if name in changes:
                changes[name] = tuple(changes[name])
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known}
        return cls(**values)


def _check(ok, name, value, expected):
    if not ok:
        raise ParameterError(f"{name} must be {expected}, got {value!r}", name)


PRESETS = {
    # OpenCV DoG SIFT + RootSIFT for retrieval and copy detection.
    # The DoG threshold is relative to each image's contrast, so that dark, hazy and faded
    # copies keep the keypoints of their originals.
    "sift": Config(preset="sift", extractor="sift", max_side=640, words=1000,
                   relative_contrast=True, contrast_measure="spread-gradient"),
    # The same at most 256 pixels a side: OpenCV's DoG (which doubles the image first) is
    # most of a query's time, and it costs about a quarter of what it does at 512. Copy
    # detection among 1000 distractors lost 0.003 of mAP
    # (benchmarks/results/distractors_recipes.md).
    "sift-fast": Config(preset="sift-fast", extractor="sift", max_side=256, words=1000,
                        relative_contrast=True, contrast_measure="spread-gradient"),
    # VLFeat PHOW: dense SIFT at bin sizes 4, 6, 8, 10, smoothed with sigma =
    # sqrt((size / magnif)^2 - 0.25), magnif 6 (the image's own blur of 0.5 px accounted for).
    "phow": Config(preset="phow", extractor="dense", max_side=480, step=4, sizes=(4, 6, 8, 10),
                   words=1000, power=1.0, store_descriptors=False),
    # ILSVRC-2010 SBOW: max side 300, 20x20-pixel patches (bin 5) every 10 px at full, half and
    # quarter size, 1000 words.
    "sbow": Config(preset="sbow", extractor="dense-pyramid", max_side=300, step=10, sizes=(5,),
                   scales=(1.0, 0.5, 0.25), words=1000, power=1.0, store_descriptors=False,
                   frame_units="normalized"),
}


def get_preset(name: str, **overrides) -> Config:
    if name not in PRESETS:
        raise ParameterError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}",
                             "preset")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]

"""The quality bar on real labelled images: Fashion-MNIST.

Fashion-MNIST as Debian's ``dataset-fashion-mnist`` ships it (Zalando's 28 x 28 gray photos
of 10 kinds of clothing; ``.ci/run`` installs it).  The first ``FASHION_TRAIN`` images of each
class of the training file train, the first ``FASHION_VAL`` of each class of the *test* file
score; ``tests/baseline/quality_store.py`` builds the split-tree store and runs `features
baseline` on BoVW, a spatial pyramid, Fisher vectors and the raw pixels.  The handwritten
digits are ``tests/baseline/test_baseline_digits.py``.

This is a cheaper configuration than the one that reaches the issue's 88% (500 training
images a class, 64 x 64, 1024 words, PCA 64 and 256 components, 30 epochs: Fisher 9.8% error,
BoVW pyramid 11.9%, McNemar p = 0.014; 7.5 minutes, now the benchmark
``benchmarks/bench_baseline_quality.py fashion --which first ...``, see the README).  Every
setting was chosen by ``benchmarks/bench_baseline_quality.py`` on other images, never on
these: the last images of each class of the training file.  There, at 300 a class, 48 x 48,
256 words, Fisher vectors of PCA 64 and 64 components (1x1 + 3x1) erred on 14.4% [12.4%,
16.7%] of 1,000, significantly better than BoVW (18.8%), its pyramid (20.8%) and the pixels
(17.7%); the test asked the same and at most the upper end of that interval.

Measured first on the test file's first 100 of each class: Fisher vectors 15.2% [13.1%,
17.6%], BoVW pyramid 18.6% (McNemar p = 0.0007), BoVW 16.7% (p = 0.13), pixels 17.2% (p =
0.10): the win over BoVW was not significant on 1,000 images.  The settings are unchanged; the
test now scores the first 300 of each class (3,000, 2,000 of them never scored before), with
what it asks fixed before that run: Fisher best, significantly better than BoVW and its
pyramid, better than the pixels, at most 16.7% error.  Measured: Fisher vectors 15.2% [14.0%,
16.5%] (84.8% top-1), BoVW 17.3% (p = 0.0001), BoVW pyramid 19.9% (p = 1e-16), pixels 17.3%
(p = 0.002); 3.4 minutes of processor time against 2.7 before (9 minutes of wall time on 2
loaded cores).

    python -m pytest tests/baseline/test_baseline_quality.py -s     # prints the numbers
"""
import gzip
from pathlib import Path

import numpy as np
import pytest

from quality_store import build, first_of_each_class, summary

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_TRAIN, FASHION_VAL, FASHION_SIDE, FASHION_WORDS, FASHION_EPOCHS = 300, 300, 48, 256, 10
FASHION_FISHER = ["--pca-dims", "64", "--components", "64", "--grids", "1x1,3x1"]
FASHION_SPM = "1x1,2x2,4x4"


def _idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    if not FASHION.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    y = _idx(FASHION / "train-labels-idx1-ubyte.gz", 8)
    x = _idx(FASHION / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    yt = _idx(FASHION / "t10k-labels-idx1-ubyte.gz", 8)
    xt = _idx(FASHION / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    splits = {"train": (x, y, first_of_each_class(y, 0, FASHION_TRAIN)),
              "val": (xt, yt, first_of_each_class(yt, 0, FASHION_VAL))}
    r = build(tmp_path_factory.mktemp("fashion"), splits, FASHION_SIDE, FASHION_WORDS,
              FASHION_FISHER, FASHION_SPM, FASHION_EPOCHS)
    return summary(f"Fashion-MNIST, {FASHION_TRAIN} training images per class", r)


def test_fashion_fisher_vectors_beat_bovw_significantly(fashion):
    errors, best, p = fashion
    assert best["encoding"] == "fisher"
    assert p["bovw"] < 0.05 and p["spm"] < 0.05
    assert errors["fisher"] < errors["pixels"]


def test_fashion_best_top1_accuracy(fashion):
    _, best, _ = fashion
    # development images: 14.4% [12.4%, 16.7%]; asked: the upper end of that interval
    assert best["top1_error"] <= 0.167

"""Nearest-centroid assignment: every method equals a float64 brute-force argmin."""
import cv2
import numpy as np
import pytest

from features.codebook import Assigner
from features.codebook import kmeans
from features.extract.dense import dense_sift_pyramid
from features.extract import sift

METHODS = ("auto", "pruned", "brute")


def brute_force(centroids, x):
    """Float64 argmin of the squared distance; ties go to the smallest index."""
    c = np.asarray(centroids, np.float32).astype(np.float64)
    x = np.asarray(x).astype(np.float32).astype(np.float64)
    out = np.empty(len(x), np.int64)
    for s in range(0, len(x), 256):
        d2 = ((x[s:s + 256, None, :] - c[None]) ** 2).sum(-1)
        out[s:s + 256] = d2.argmin(axis=1)
    return out


def _gray(name, max_side=300):
    import skimage
    from pathlib import Path
    from skimage.io import imread
    image = np.asarray(imread(Path(skimage.__file__).parent / "data" / name))
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    h, w = image.shape
    s = max_side / max(h, w)
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def _dsift(gray):
    return dense_sift_pyramid(gray, bin_size=5, step=10, scales=(1.0, 0.5, 0.25))[1]


@pytest.fixture(scope="module")
def sbow():
    """A dense-SIFT codebook learned on some photos, and descriptors of OTHER photos."""
    train = []
    for name in ("brick.png", "coins.png", "grass.png", "gravel.png", "coffee.png",
                 "chelsea.png", "moon.png", "text.png"):
        gray = _gray(name)
        train += [_dsift(gray), _dsift(np.ascontiguousarray(gray[:, ::-1]))]
    train = np.concatenate(train)
    centroids = kmeans(train.astype(np.float32), 500, iters=10, seed=0)
    test = np.concatenate([_dsift(_gray(name))
                           for name in ("astronaut.png", "camera.png", "rocket.jpg")])
    assert (test.max(axis=1) == 0).any() and (test.max(axis=1) > 0).mean() > 0.5
    return centroids, test


@pytest.fixture(scope="module")
def rootsift():
    train = np.concatenate([sift(_gray(name, 512), root=True)[1]
                            for name in ("brick.png", "coins.png", "grass.png", "gravel.png",
                                         "coffee.png", "chelsea.png", "text.png")])
    centroids = kmeans(train.astype(np.float32), 256, iters=10, seed=0)
    test = np.concatenate([sift(_gray(name, 512), root=True)[1]
                           for name in ("astronaut.png", "camera.png", "rocket.jpg")])
    return centroids, test


@pytest.mark.parametrize("method", METHODS)
def test_dense_sift_codebook_matches_brute_force(sbow, method):
    centroids, x = sbow
    words = Assigner(centroids, method=method).assign(x)
    assert words.dtype == np.int32 and words.shape == (len(x),)
    np.testing.assert_array_equal(words, brute_force(centroids, x))


@pytest.mark.parametrize("method", METHODS)
def test_rootsift_codebook_matches_brute_force(rootsift, method):
    centroids, x = rootsift
    np.testing.assert_array_equal(Assigner(centroids, method=method).assign(x),
                                  brute_force(centroids, x))


@pytest.mark.parametrize("rank", [0, 1, 5, 16, 64, 127, 128])
def test_rank_changes_speed_not_words(sbow, rank):
    centroids, x = sbow
    assigner = Assigner(centroids, method="pruned", rank=rank)
    assert assigner.rank == rank
    np.testing.assert_array_equal(assigner.assign(x[:1500]), brute_force(centroids, x[:1500]))


def test_float_and_uint8_input_agree(sbow):
    centroids, x = sbow
    assigner = Assigner(centroids)
    words = assigner.assign(x)
    for dtype in (np.float32, np.float64, np.float16):
        np.testing.assert_array_equal(assigner.assign(x.astype(dtype)), words)


@pytest.mark.parametrize("layout", ["every-other-row", "fortran", "column-slice"])
def test_non_contiguous_input(sbow, layout):
    centroids, x = sbow
    if layout == "every-other-row":
        view = x[::2]
    elif layout == "fortran":
        view = np.asfortranarray(x)
    else:
        wide = np.zeros((len(x), 2 * x.shape[1]), x.dtype)
        wide[:, ::2] = x
        view = wide[:, ::2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(Assigner(centroids).assign(view),
                                  brute_force(centroids, np.ascontiguousarray(view)))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("method", METHODS)
def test_empty_input_gives_empty_output(dtype, method):
    centroids = np.random.default_rng(0).random((100, 128)).astype(np.float32) * 100
    words = Assigner(centroids, method=method).assign(np.zeros((0, 128), dtype))
    assert words.shape == (0,) and words.dtype == np.int32


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("method", METHODS)
def test_one_descriptor(dtype, method):
    rng = np.random.default_rng(1)
    centroids = rng.random((300, 128)).astype(np.float32) * 120
    x = (rng.random((1, 128)) * 120).astype(dtype)
    words = Assigner(centroids, method=method).assign(x)
    assert words.shape == (1,)
    assert words[0] == brute_force(centroids, x)[0]


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("method", METHODS)
def test_one_centroid(dtype, method):
    rng = np.random.default_rng(2)
    x = (rng.random((50, 16)) * 200).astype(dtype)
    x[:5] = 0
    words = Assigner(rng.random((1, 16)) * 50, method=method).assign(x)
    np.testing.assert_array_equal(words, np.zeros(50, np.int32))


@pytest.mark.parametrize("method", METHODS)
def test_duplicate_centroids_go_to_the_smallest_index(sbow, method):
    centroids, x = sbow
    doubled = np.concatenate([centroids, centroids[::-1]])
    words = Assigner(doubled, method=method).assign(x[:2000])
    assert words.max() < len(centroids)
    np.testing.assert_array_equal(words, brute_force(centroids, x[:2000]))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_ties_go_to_the_smallest_index(method, seed):
    # Integer centroids on a coarse grid and integer descriptors: squared
    # distances are exact integers, so ties are everywhere.
    rng = np.random.default_rng(seed)
    centroids = rng.integers(0, 4, (200, 128)).astype(np.float32) * 2
    x = rng.integers(0, 8, (3000, 128)).astype(np.uint8)
    # Descriptors half way between two centroids.
    a, b = rng.integers(0, 200, (2, 500))
    x[:500] = ((centroids[a] + centroids[b]) / 2).astype(np.uint8)
    xi, ci = x.astype(np.int64), centroids.astype(np.int64)
    d2 = (xi ** 2).sum(1)[:, None] + (ci ** 2).sum(1)[None] - 2 * xi @ ci.T   # exact
    assert ((d2 == d2.min(1, keepdims=True)).sum(1) > 1).mean() > 0.2
    words = Assigner(centroids, method=method, rank=None if method != "pruned" else 8)
    np.testing.assert_array_equal(words.assign(x), d2.argmin(1))


@pytest.mark.parametrize("method", METHODS)
def test_all_zero_descriptors(sbow, method):
    centroids, _ = sbow
    x = np.zeros((10, 128), np.uint8)
    np.testing.assert_array_equal(Assigner(centroids, method=method).assign(x),
                                  brute_force(centroids, x))


@pytest.mark.parametrize("d", [1, 2, 3, 17, 130])
@pytest.mark.parametrize("method", METHODS)
def test_other_widths_and_float_codebooks(d, method):
    rng = np.random.default_rng(d)
    centroids = rng.normal(size=(150, d))
    x = rng.normal(size=(400, d)).astype(np.float32)
    np.testing.assert_array_equal(Assigner(centroids, method=method).assign(x),
                                  brute_force(centroids, x))


def test_far_away_and_degenerate_inputs():
    rng = np.random.default_rng(3)
    centroids = rng.random((120, 32)).astype(np.float32)
    x = np.concatenate([rng.random((10, 32)) * 1e6,         # far from every centroid
                        np.full((3, 32), 0.5),               # near the centre
                        -rng.random((10, 32)) * 1e-3]).astype(np.float32)
    np.testing.assert_array_equal(Assigner(centroids).assign(x), brute_force(centroids, x))
    flat = np.full((64, 32), 7.0)                            # every centroid equal
    np.testing.assert_array_equal(Assigner(flat).assign(x), np.zeros(len(x), np.int32))


def test_threads_give_the_same_words(sbow):
    centroids, x = sbow
    np.testing.assert_array_equal(Assigner(centroids, n_threads=2).assign(x),
                                  Assigner(centroids).assign(x))


def test_out_argument(sbow):
    centroids, x = sbow
    assigner = Assigner(centroids)
    out = np.full(len(x), -1, np.int32)
    assert assigner.assign(x, out=out) is out
    np.testing.assert_array_equal(out, assigner.assign(x))
    with pytest.raises(ValueError, match="out must be"):
        assigner.assign(x, out=np.empty(len(x), np.int64))
    with pytest.raises(ValueError, match="out must be"):
        assigner.assign(x, out=np.empty(len(x) + 1, np.int32))


def test_attributes(sbow):
    centroids, _ = sbow
    assigner = Assigner(centroids.astype(np.float64))
    assert (assigner.k, assigner.d) == centroids.shape
    assert assigner.centroids.dtype == np.float32
    np.testing.assert_array_equal(assigner.centroids, centroids)
    assert assigner.method == "pruned" and 0 < assigner.rank < assigner.d
    assert Assigner(centroids[:10]).method == "brute"


@pytest.mark.parametrize("bad, match", [
    (np.zeros((5, 127), np.uint8), r"\(n, 128\), got \(5, 127\)"),
    (np.zeros(128, np.uint8), r"\(n, 128\), got \(128,\)"),
    (np.zeros((2, 128, 1), np.uint8), r"got \(2, 128, 1\)"),
    (np.zeros((5, 128), np.int32), "dtype must be uint8 or float, got int32"),
    (np.full((5, 128), np.nan, np.float32), "NaN or infinite"),
    (np.full((5, 128), np.inf), "NaN or infinite"),
    (np.full((5, 128), 1e30), "magnitude"),
])
def test_bad_descriptors_raise(bad, match):
    assigner = Assigner(np.random.default_rng(0).random((70, 128)))
    with pytest.raises(ValueError, match=match):
        assigner.assign(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"centroids": np.zeros((0, 128))}, r"non-empty \(k, d\) array, got shape \(0, 128\)"),
    ({"centroids": np.zeros(128)}, r"got shape \(128,\)"),
    ({"centroids": np.full((4, 8), np.nan)}, "NaN or infinite"),
    ({"centroids": np.array([["a"] * 8] * 4)}, "numeric"),
    ({"method": "approximate"}, "method must be one of auto, pruned, brute, got 'approximate'"),
    ({"rank": 129}, r"rank must be an integer in \[0, 128\], got 129"),
    ({"rank": -1}, "got -1"),
    ({"rank": 2.5}, "got 2.5"),
    ({"n_threads": 0}, "n_threads must be a positive integer, got 0"),
    ({"n_threads": True}, "got True"),
])
def test_bad_parameters_raise(kwargs, match):
    args = {"centroids": np.random.default_rng(0).random((70, 128))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Assigner(args.pop("centroids"), **args)


def _with_zero_rows(x, rng, fraction=0.3):
    x = x.copy()
    x[rng.random(len(x)) < fraction] = 0
    return x


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_blocks_with_and_without_zero_rows(sbow, monkeypatch, dtype, method, n_threads):
    # Small blocks: some all zero, some without a zero row, some mixed, and a
    # short last one; every block is compacted on its own.
    monkeypatch.setattr("features.codebook.assign._BLOCK_ROWS", 7)
    centroids, x = sbow
    rng = np.random.default_rng(5)
    x = _with_zero_rows(x[:300], rng)
    x[7:14] = 0
    x[14:21] = np.maximum(x[14:21], 1)
    x = x[:297].astype(dtype)
    words = Assigner(centroids, method=method, n_threads=n_threads).assign(x)
    np.testing.assert_array_equal(words, brute_force(centroids, x))
    assert (words[7:14] == brute_force(centroids, x[7:8])[0]).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_tiny_batches_with_zero_rows(sbow, dtype, n):
    centroids, x = sbow
    rng = np.random.default_rng(n)
    assigner = Assigner(centroids)
    for _ in range(20):
        batch = _with_zero_rows(x[rng.integers(0, len(x), n)], rng, 0.4).astype(dtype)
        np.testing.assert_array_equal(assigner.assign(batch), brute_force(centroids, batch))


def test_random_and_tied_uint8_descriptors():
    # Random uint8 rows, and rows half way between two integer centroids
    # (exact ties), with zero rows among them, against a float64 argmin.
    rng = np.random.default_rng(11)
    centroids = (rng.integers(0, 64, (300, 128)) * 2).astype(np.float32)
    x = rng.integers(0, 128, (1500, 128)).astype(np.uint8)
    a, b = rng.integers(0, 300, (2, 400))
    x[:400] = ((centroids[a] + centroids[b]) / 2).astype(np.uint8)
    x = _with_zero_rows(x, rng, 0.1)
    for method in METHODS:
        for dtype in (np.uint8, np.float32):
            np.testing.assert_array_equal(Assigner(centroids, method=method).assign(x.astype(dtype)),
                                          brute_force(centroids, x))


def test_one_assigner_called_from_several_threads(sbow):
    from concurrent.futures import ThreadPoolExecutor
    centroids, x = sbow
    rng = np.random.default_rng(4)
    x = _with_zero_rows(x, rng, 0.2)
    assigner = Assigner(centroids)
    chunks = [x[s:s + 700] for s in range(0, len(x), 700)] * 3
    with ThreadPoolExecutor(4) as pool:
        words = list(pool.map(assigner.assign, chunks))
    for chunk, w in zip(chunks, words):
        np.testing.assert_array_equal(w, brute_force(centroids, chunk))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_compact_rows_kernel(dtype):
    from features._ext import load
    kern = load("_assign", "assignment")
    rng = np.random.default_rng(6)
    x = _with_zero_rows(rng.integers(0, 255, (50, 9)), rng, 0.4).astype(dtype)
    if dtype == np.float32:
        x[3] = -0.0                     # zero too
        x[4] = 0
        x[4, 8] = -1e-30
    xf = np.full((50, 9), np.nan, np.float32)
    rows = np.full(50, -1, np.intp)
    m = kern.compact_rows(x, xf, rows)
    keep = np.flatnonzero((x != 0).any(axis=1))
    assert m == len(keep)
    np.testing.assert_array_equal(rows[:m], keep)
    np.testing.assert_array_equal(xf[:m], x[keep].astype(np.float32))
    with pytest.raises(ValueError, match="too small"):
        kern.compact_rows(x, np.empty((49, 9), np.float32), rows)

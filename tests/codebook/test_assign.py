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


# --- The two paths of Assigner.assign: bfloat16 bounds (CPUs with AVX512_BF16)
# and the float32 BLAS product (elsewhere, or FEATURES_ASSIGN_BF16=0).

def _has_bf16():
    from features._ext import load
    return load("_assign", "assignment").cpu_has_bf16()


PATHS = [pytest.param("bf16", marks=pytest.mark.skipif(not _has_bf16(),
                                                       reason="CPU without AVX512_BF16")),
         "float32"]


class _Path:
    """Assigners made inside take the given path."""

    def __init__(self, path):
        self.value = "1" if path == "bf16" else "0"

    def __enter__(self):
        import os
        self.old = os.environ.get("FEATURES_ASSIGN_BF16")
        os.environ["FEATURES_ASSIGN_BF16"] = self.value

    def __exit__(self, *exc):
        import os
        if self.old is None:
            del os.environ["FEATURES_ASSIGN_BF16"]
        else:
            os.environ["FEATURES_ASSIGN_BF16"] = self.old


def _assigner(path, centroids, **kwargs):
    with _Path(path):
        a = Assigner(centroids, **kwargs)
    assert a._use_bf16 == (path == "bf16")
    return a


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rank", [None, 0, 1, 20, 21, 51, 128])
def test_paths_match_brute_force_on_sbow(sbow, path, rank):
    centroids, x = sbow
    a = _assigner(path, centroids, method="auto" if rank is None else "pruned", rank=rank)
    np.testing.assert_array_equal(a.assign(x), brute_force(centroids, x))


@pytest.mark.parametrize("path", PATHS)
def test_paths_match_brute_force_on_rootsift(rootsift, path):
    centroids, x = rootsift
    for method in METHODS:
        a = _assigner(path, centroids, method=method)
        np.testing.assert_array_equal(a.assign(x), brute_force(centroids, x))


@pytest.mark.skipif(not _has_bf16(), reason="CPU without AVX512_BF16")
def test_bf16_default_rank_is_wider_and_odd(sbow):
    centroids, _ = sbow
    wide = _assigner("bf16", centroids)
    narrow = _assigner("float32", centroids)
    assert wide.method == narrow.method == "pruned"
    assert wide.rank >= narrow.rank and wide.rank % 2 == 1
    # Given ranks and k-means' assigners are left alone.
    assert _assigner("bf16", centroids, rank=20).rank == 20


@pytest.mark.parametrize("path", PATHS)
def test_paths_with_duplicated_and_nearly_equal_centroids(sbow, path):
    # Centroids one float32 step apart round to the same bfloat16 values, so
    # their bounds are equal: the distances must decide, in float64.
    centroids, x = sbow
    c = centroids[:300]
    near = np.nextafter(c, np.float32(np.inf))
    shifted = c.copy()
    shifted[:, 0] += 0.5
    book = np.concatenate([c, near, c[::-1], shifted])
    x = x[:3000]
    rng = np.random.default_rng(8)
    i = rng.integers(0, 300, 500)
    mid = (c[i].astype(np.float64) + shifted[i]) / 2
    rows = np.concatenate([x.astype(np.float32), mid.astype(np.float32),
                           c[i] + 0.25, c[i]])
    for method in ("pruned", "brute"):
        a = _assigner(path, book, method=method)
        np.testing.assert_array_equal(a.assign(rows), brute_force(book, rows))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", [0, 1])
def test_paths_on_exact_ties(path, seed):
    rng = np.random.default_rng(seed)
    centroids = rng.integers(0, 4, (200, 128)).astype(np.float32) * 2
    x = rng.integers(0, 8, (3000, 128)).astype(np.uint8)
    a, b = rng.integers(0, 200, (2, 500))
    x[:500] = ((centroids[a] + centroids[b]) / 2).astype(np.uint8)
    for rank in (None, 8, 9, 128):
        words = _assigner(path, centroids, method="pruned", rank=rank).assign(x)
        np.testing.assert_array_equal(words, brute_force(centroids, x))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", [1, 5, 16, 17, 63, 64, 65, 100, 130])
def test_paths_with_any_k_and_n(path, k):
    # Tiles of 4 rows and 64 centroids, with their remainders.
    rng = np.random.default_rng(k)
    centroids = rng.integers(0, 100, (k, 40)).astype(np.float32)
    for n in (1, 2, 3, 4, 5, 9, 131):
        x = rng.integers(0, 100, (n, 40)).astype(np.uint8)
        for method in ("pruned", "brute"):
            a = _assigner(path, centroids, method=method)
            np.testing.assert_array_equal(a.assign(x), brute_force(centroids, x))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("scale", [1e-12, 1e-3, 1.0, 1e6, 1e12])
def test_paths_at_any_scale(path, scale):
    rng = np.random.default_rng(5)
    centroids = (rng.normal(size=(200, 64)) * scale).astype(np.float32)
    x = (rng.normal(size=(600, 64)) * scale).astype(np.float32)
    x[:100] = centroids[:100] + (rng.normal(size=(100, 64)) * scale * 1e-4)
    for method in ("pruned", "brute"):
        a = _assigner(path, centroids, method=method)
        np.testing.assert_array_equal(a.assign(x), brute_force(centroids, x))


@pytest.mark.skipif(not _has_bf16(), reason="CPU without AVX512_BF16")
def test_bf16_near_ties_hypothesis():
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=60, deadline=None)
    @given(seed=st.integers(0, 2 ** 32 - 1), k=st.integers(2, 90), d=st.integers(2, 48),
           gap=st.sampled_from([0.0, 1e-7, 1e-5, 1e-3, 1e-1, 1.0]),
           spread=st.sampled_from([1.0, 50.0, 300.0]))
    def check(seed, k, d, gap, spread):
        rng = np.random.default_rng(seed)
        centroids = (rng.random((k, d)) * spread).astype(np.float32)
        # Pairs of centroids, and rows almost half way between them: the two
        # distances differ by about ``gap`` (relative), far below bfloat16's
        # precision for small gaps.
        j1, j2 = rng.integers(0, k, (2, 40))
        t = 0.5 + gap * rng.uniform(-1, 1, 40)[:, None]
        x = (centroids[j1] * t + centroids[j2] * (1 - t)).astype(np.float32)
        x = np.concatenate([x, (rng.random((40, d)) * spread).astype(np.float32)])
        want = brute_force(centroids, x)
        for method in ("pruned", "brute"):
            for rank in ((None, 1, d // 2) if method == "pruned" else (None,)):
                a = _assigner("bf16", centroids, method=method, rank=rank)
                np.testing.assert_array_equal(a.assign(x), want)
                np.testing.assert_array_equal(a.assign(x.astype(np.float64)), want)

    check()


@pytest.mark.skipif(not _has_bf16(), reason="CPU without AVX512_BF16")
def test_bf16_threads_and_blocks(sbow, monkeypatch):
    from features.codebook import assign as assign_module
    centroids, x = sbow
    rng = np.random.default_rng(9)
    x = _with_zero_rows(x[:2500], rng, 0.3)
    monkeypatch.setattr(assign_module, "_BLOCK_ROWS", 37)
    for t in (1, 3):
        a = _assigner("bf16", centroids, n_threads=t)
        np.testing.assert_array_equal(a.assign(x), brute_force(centroids, x))


@pytest.mark.skipif(not _has_bf16(), reason="CPU without AVX512_BF16")
def test_bf16_kernels():
    from features._ext import load
    from features.codebook.assign import _Bf16Bounds, _from_bf16, _to_bf16
    kern = load("_assign", "assignment")
    rng = np.random.default_rng(10)
    x = rng.integers(0, 200, (30, 24)).astype(np.float32)
    x[3] = 0
    for r in (0, 1, 6, 7):
        a = Assigner(rng.random((50, 24)) * 100, method="pruned", rank=r)
        proj = (x @ a._axes) if r else np.empty((30, 0), np.float32)
        proj = np.ascontiguousarray(proj, dtype=np.float32)
        aug, n2, rad = np.empty((30, r + 2), np.float32), np.empty(30), np.empty(30)
        kern.augment(x, proj, a._proj_rtol, aug, n2, rad)
        bf = _Bf16Bounds(a._ctilde)
        xp = np.empty((30, (r + 2) // 2), np.uint32)
        n2b, radb = np.empty(30), np.empty(30)
        kern.augment_bf16(x, proj, a._proj_rtol, bf.centroid_error, xp, n2b, radb)
        # The packed values are the rows' (a, ||p||) rounded as in NumPy.
        bits = xp.view(np.uint16)[:, :r + 1]
        np.testing.assert_array_equal(bits, _to_bf16(aug[:, :r + 1]))
        xh = _from_bf16(bits).astype(np.float64)
        np.testing.assert_allclose(n2b, (xh ** 2).sum(1), rtol=1e-14)
        err = np.sqrt(((xh - aug[:, :r + 1]) ** 2).sum(1))
        live = rad >= 0
        np.testing.assert_array_equal(radb < 0, ~live)
        assert (radb[live] >= rad[live] + err[live] + bf.centroid_error).all()
        # Weights and bias: -2 c^ and ||c^||**2, padded to 16 centroids.
        assert bf.weights.shape == ((r + 2) // 2, 64) and bf.bias.shape == (64,)
        w = _from_bf16(bf.weights[:, :50].T.copy().view(np.uint16))[:, :r + 1]
        ch = _from_bf16(_to_bf16(a._ctilde))
        np.testing.assert_array_equal(w, -2 * ch)
        np.testing.assert_allclose(bf.bias[:50], (ch.astype(np.float64) ** 2).sum(1),
                                   rtol=1e-7)
    out = np.empty(30, np.int32)
    scratch = a._scratch(1)[1:]
    with pytest.raises(ValueError, match="wrong shape"):
        kern.assign_bf16(x, xp, n2b, radb, a.centroids, bf.weights, bf.bias,
                         bf.cnorm2_max, bf.bound_rtol, bf.bound_abs, a._dist_rtol, 0,
                         out, np.empty((1, 10), np.float32), *scratch)


def test_to_bf16_rounds_to_nearest_even():
    from features.codebook.assign import _from_bf16, _to_bf16
    v = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -3.0, 0.0,
                  -0.0, 1e-40, -1e-40, 2.0 ** -126], np.float32)
    want = np.array([1.0, 1.0, 1 + 2 ** -6, 1 + 2 ** -7, -3.0, 0.0, 0.0, 0.0, 0.0,
                     2.0 ** -126], np.float32)
    np.testing.assert_array_equal(_from_bf16(_to_bf16(v)), want)

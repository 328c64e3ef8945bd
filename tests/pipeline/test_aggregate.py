"""`features aggregate`: encodings added to an existing store, shard by shard, resumable,
atomic; bad input refused with one line through the real command."""
import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import blas_thread_counts, record_blas_threads, run_cli
import features.pipeline.aggregate as agg
from features.pipeline.aggregate import aggregate
from features.store import read_encoding
from features.encodings.kernel_map import HomogeneousKernelMap
from features.encodings.spm import spatial_pyramid_reference
from features.store import Store
from features.exceptions import StoreError


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, small_set):
    """The small set plus an undecodable file (a failed image), 5 images per shard."""
    from features.pipeline import run
    from features.presets import get_preset
    from features.sources import open_source
    root = tmp_path_factory.mktemp("aggset")
    images = root / "images"
    shutil.copytree(small_set, images)
    (images / "coins" / "broken.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    config = get_preset("sift", words=32, max_side=160, max_keypoints=150, shard_size=5,
                        sample_images=25, sample_per_image=100)
    out = root / "store"
    run(config, open_source(str(images)), out, progress=False)
    return out


@pytest.fixture
def store(tmp_path, base_store):
    out = tmp_path / "store"
    shutil.copytree(base_store, out)
    return out


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _quiet(*a, **k):
    pass


def test_spm_rows_equal_the_reference(store):
    hkm = HomogeneousKernelMap("chi2", 1)
    aggregate(None, store, "spm", "spm", {"kernel_map": "chi2"}, 1, progress=False, report=_quiet)
    aggregate(None, store, "spm", "strips", {"grids": "1x1,3x1", "normalization": "l2"}, 1,
              progress=False, report=_quiet)
    with Store(store) as s:
        h5 = s.h5
        status, widths, heights = s.column("status"), s.column("width"), s.column("height")
        offsets = h5["offsets"][:]
        words, frames = h5["words"][:].astype(np.int64), h5["frames"][:]
        spm, strips = read_encoding(s, "spm"), read_encoding(s, "strips")
        g = h5["encodings/spm"]
        assert g.attrs["method"] == "spm" and g.attrs["grids"] == "1x1,2x2,4x4"
        assert g.attrs["kernel_map"] == "chi2" and tuple(g.attrs["shape"]) == (25, 32 * 21 * 3)
        assert json.loads(g.attrs["params"])["weights"] == "lazebnik"
    assert status.tolist().count(0) == 24 and len(status) == 25
    for i in range(len(status)):
        a, b = offsets[i], offsets[i + 1]
        for got, grids, norm, m in ((spm, "1x1,2x2,4x4", "l1", hkm),
                                    (strips, "1x1,3x1", "l2", None)):
            ref = spatial_pyramid_reference(words[a:b], frames[a:b], widths[i], heights[i], 32,
                                            grids, normalization=norm, kernel_map=m)
            np.testing.assert_allclose(got[i], ref, rtol=2e-5, atol=1e-6)
    failed = int(np.flatnonzero(status)[0])
    assert not spm[failed].any() and not strips[failed].any()     # failed image: all zeros


def test_killed_aggregate_resumes_and_skips_finished_shards(store, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    shutil.copytree(store, clean)
    aggregate(None, clean, "spm", None, None, 1, progress=False, report=_quiet)

    real = agg.encode_shard
    calls = []

    def dies_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt          # as a kill between two shards
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(agg, "encode_shard", dies_after_two)
    before = _digest(store / "store.h5")
    with pytest.raises(KeyboardInterrupt):
        aggregate(None, store, "spm", None, None, 1, progress=False, report=_quiet)
    assert _digest(store / "store.h5") == before          # nothing attached yet
    calls.clear()
    monkeypatch.setattr(agg, "encode_shard", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    aggregate(None, store, "spm", None, None, 1, progress=False, report=_quiet)
    assert len(calls) == 3                                 # 5 shards, 2 were done
    with Store(store) as s, Store(clean) as c:
        np.testing.assert_array_equal(read_encoding(s, "spm"), read_encoding(c, "spm"))


def test_workers_give_the_same_encoding(store, tmp_path, cli_env):
    other = tmp_path / "other"
    shutil.copytree(store, other)
    run_cli("aggregate", store, "--method", "spm", "--grids", "2x2", "-q", env=cli_env,
            check=True)
    proc = run_cli("aggregate", other, "--method", "spm", "--grids", "2x2", "--jobs", 2, "-q",
                   env=cli_env, check=True)
    assert "encodings/spm: 25 x 128 sparse float32" in proc.stdout
    with Store(store) as s, Store(other) as o:
        np.testing.assert_array_equal(read_encoding(s, "spm"), read_encoding(o, "spm"))
    info = json.loads(run_cli("info", other, "--json", env=cli_env, check=True).stdout)
    e = info["encoding_details"]["spm"]
    assert (e["method"], e["layout"], e["dim"], e["dtype"]) == ("spm", "csr", 128, "float32")
    text = run_cli("info", other, env=cli_env, check=True).stdout
    assert "encoding:     spm: spm, csr, 128 dims, float32" in text


def test_encodings_survive_a_rebuilt_store(store):
    from features.store.layout import CODEBOOK_FILE
    from features.pipeline import encode_images
    from features.sources import open_source
    aggregate(None, store, "bovw", "hist", {"kernel_map": "intersection"}, 1, progress=False,
              report=_quiet)
    with Store(store) as s:
        before = read_encoding(s, "hist")
        config = s.config
        source = json.loads((store / "manifest.json").read_text())["job"]["source"]
    encode_images(config, open_source(source), store / CODEBOOK_FILE, store, progress=False)
    with Store(store) as s:
        np.testing.assert_array_equal(read_encoding(s, "hist"), before)
        assert s.h5["encodings/hist"].attrs["kernel_map"] == "intersection"


def _one_line_error(proc, fragment):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error:"), proc.stderr
    assert fragment in lines[0], lines[0]


def test_bad_input_one_line_and_nothing_written(store, tmp_path, cli_env):
    before = _digest(store / "store.h5")
    manifest = (store / "manifest.json").read_text()
    cases = [
        (["--method", "sift"], "invalid choice: 'sift'"),
        (["--method", "spm", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--method", "spm", "--components", 8], "--components does not apply to method spm"),
        (["--method", "spm", "--grids", "2y2"], "RxC"),
        (["--method", "vlad", "--centers", 0], "--centers must be"),
        (["--method", "spm", "--name", "bovw"], "built by the encode step"),
        (["--method", "spm", "--name", "a/b"], "--name must be"),
    ]
    for args, fragment in cases:
        _one_line_error(run_cli("aggregate", store, *args, env=cli_env), fragment)
    (tmp_path / "nostore").mkdir()
    _one_line_error(run_cli("aggregate", tmp_path / "nostore", "--method", "spm", env=cli_env),
                    "not a features store")
    # a name that models/ of a version-1 store uses for a model
    before = _digest(store / "store.h5")
    _one_line_error(run_cli("aggregate", store, "--method", "vlad", "--name", "gmm",
                            env=cli_env), "name 'gmm' is the name of a model")
    assert _digest(store / "store.h5") == before
    assert (store / "manifest.json").read_text() == manifest
    assert not (store / "encodings").exists()
    # a name that exists
    run_cli("aggregate", store, "--method", "spm", "-q", env=cli_env, check=True)
    before = _digest(store / "store.h5")
    _one_line_error(run_cli("aggregate", store, "--method", "spm", "--grids", "1x1", env=cli_env),
                    "already has encodings/spm; pass --replace")
    assert _digest(store / "store.h5") == before
    run_cli("aggregate", store, "--method", "spm", "--grids", "1x1", "--replace", "-q",
            env=cli_env, check=True)
    with Store(store) as s:
        assert s.h5["encodings/spm"].attrs["shape"][1] == 32
    assert len(list((store / "encodings" / "spm").glob("shard-*.h5"))) == 5   # old files gone


def test_store_without_descriptors_or_sample(store, cli_env):
    with h5py.File(store / "store.h5", "r+") as f:
        del f["descriptors"]
    _one_line_error(run_cli("aggregate", store, "--method", "fisher", env=cli_env),
                    "rerun with descriptors, or give --source to extract them again")
    (store / "sample.npy").unlink()
    _one_line_error(run_cli("aggregate", store, "--method", "vlad", "--source", "/nowhere",
                            env=cli_env), "/nowhere")


def test_disk_too_small_is_refused(store, monkeypatch, capsys):
    from collections import namedtuple

    from features.cli import main
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(agg.shutil, "disk_usage", lambda p: usage(10 ** 6, 10 ** 6, 1000))
    before = _digest(store / "store.h5")
    assert main(["aggregate", str(store), "--method", "spm", "-q"]) == 2
    out, err = capsys.readouterr()
    assert "encodings/spm: 25 x 672 sparse float32, at most" in out
    assert err.startswith("features: error: not enough disk space for encodings/spm")
    assert len(err.strip().splitlines()) == 1
    assert _digest(store / "store.h5") == before and not (store / "encodings").exists()


def test_exist_ok_is_a_no_op_for_the_same_options(store):
    aggregate(None, store, "spm", None, {"grids": "2x2"}, 1, progress=False, report=_quiet)
    before = _digest(store / "store.h5")
    aggregate(None, store, "spm", None, {"grids": "2x2"}, 1, exist_ok=True, progress=False,
              report=_quiet)
    assert _digest(store / "store.h5") == before
    with pytest.raises(StoreError, match="already has"):
        aggregate(None, store, "spm", None, {"grids": "1x1"}, 1, exist_ok=True, progress=False,
                  report=_quiet)


def test_run_with_encodings(tmp_path, small_set, cli_env):
    out = tmp_path / "run"
    proc = run_cli("run", small_set, "-o", out, "--words", 16, "--max-side", 128,
                   "--encodings", "bovw,spm", "-q", env=cli_env, check=True)
    assert "encodings/spm: 24 x 336 sparse float32" in proc.stdout
    with Store(out) as s:
        assert set(s.h5["encodings"]) >= {"bovw", "spm"}
        assert s.h5["encodings/spm"].attrs["grids"] == "1x1,2x2,4x4"
    # a rerun resumes: nothing to do, the encoding stays
    proc = run_cli("run", small_set, "-o", out, "--words", 16, "--max-side", 128,
                   "--encodings", "spm", "-q", env=cli_env, check=True)
    with Store(out) as s:
        assert "spm" in s.h5["encodings"]
    _one_line_error(run_cli("run", small_set, "-o", tmp_path / "x", "--encodings", "spm,sift",
                            env=cli_env), "unknown encoding(s) sift")


def _needs(*modules):
    import importlib
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            pytest.skip(f"{m} is not there yet")


def test_vlad_and_fisher_rows_equal_the_encoders_on_stored_models(store, tmp_path):
    _needs("features.encodings.vlad", "features.encodings.fisher", "features.encodings.gmm",
           "features.encodings.pca")
    from features.encodings.fisher import fisher_vector
    from features.encodings.vlad import vlad
    again = tmp_path / "again"
    shutil.copytree(store, again)
    fisher_options = {"components": 8, "pca_dims": 16}
    for where in (store, again):
        aggregate(None, where, "vlad", None, {"centers": 8}, 1, progress=False, report=_quiet)
        aggregate(None, where, "fisher", None, fisher_options, 1, progress=False, report=_quiet)
        aggregate(None, where, "fisher", "fisher-spm", dict(fisher_options, grids="1x1,3x1",
                                                          dtype="float32"),
                  1, progress=False, report=_quiet)
    with Store(store) as s, Store(again) as a:
        h5 = s.h5
        for name in ("vlad/kmeans-vlad/centers", "fisher/pca/mean", "fisher/pca/components",
                     "fisher/gmm/means", "fisher/gmm/covariances", "fisher/gmm/priors"):
            np.testing.assert_array_equal(h5["models/" + name][:], a.h5["models/" + name][:])
            if name.startswith("fisher/"):
                # fisher-spm has models of the same sizes: a copy of fisher's, its own
                np.testing.assert_array_equal(h5["models/fisher-spm/" + name[7:]][:],
                                              h5["models/" + name][:])
        for name in ("vlad", "fisher", "fisher-spm"):
            np.testing.assert_array_equal(read_encoding(s, name), read_encoding(a, name))
        assert h5["encodings/fisher"].dtype == np.float16
        assert h5["encodings/fisher"].attrs["dtype"] == "float16"
        assert h5["encodings/vlad"].shape == (25, 8 * 128)
        assert h5["encodings/fisher-spm"].shape == (25, 2 * 8 * 16 * 4)
        centers = h5["models/vlad/kmeans-vlad/centers"][:]
        mean, comp = h5["models/fisher/pca/mean"][:], h5["models/fisher/pca/components"][:]
        gmm = [h5["models/fisher/gmm/" + k][:] for k in ("means", "covariances", "priors")]
        offsets, status = h5["offsets"][:], s.column("status")
        widths, heights = s.column("width"), s.column("height")
        v, fv, fs = (read_encoding(s, n) for n in ("vlad", "fisher", "fisher-spm"))
        for i in range(25):
            a_, b_ = offsets[i], offsets[i + 1]
            x = h5["descriptors"][a_:b_]
            frames = h5["frames"][a_:b_]
            np.testing.assert_allclose(v[i], vlad(x, centers), atol=1e-6)
            y = (x.astype(np.float32) - mean) @ comp.T
            np.testing.assert_allclose(fv[i], fisher_vector(y, *gmm), atol=2e-3)
            if i in (0, 7):
                cells = []
                for rows, cols in ((1, 1), (3, 1)):
                    r = np.clip(np.floor(frames[:, 1] / heights[i] * rows), 0, rows - 1)
                    c = np.clip(np.floor(frames[:, 0] / widths[i] * cols), 0, cols - 1)
                    cell = r * cols + c
                    cells += [fisher_vector(y[cell == j], *gmm) for j in range(rows * cols)]
                ref = np.concatenate(cells)
                np.testing.assert_allclose(fs[i], ref / np.linalg.norm(ref), atol=1e-5)
        failed = int(np.flatnonzero(status)[0])
        assert not v[failed].any() and not fv[failed].any() and not fs[failed].any()


def test_source_extracts_descriptors_again(store, tmp_path, cli_env):
    _needs("features.encodings.vlad")
    kept = tmp_path / "kept"
    shutil.copytree(store, kept)
    with h5py.File(store / "store.h5", "r+") as f:      # as a store kept without descriptors
        del f["descriptors"]
    source = json.loads((store / "manifest.json").read_text())["job"]["source"]
    _one_line_error(run_cli("aggregate", store, "--method", "vlad", "--centers", 8,
                            env=cli_env), "give --source")
    run_cli("aggregate", store, "--method", "vlad", "--centers", 8, "--source", source, "-q",
            env=cli_env, check=True)
    run_cli("aggregate", kept, "--method", "vlad", "--centers", 8, "-q", env=cli_env,
            check=True)
    with Store(store) as s, Store(kept) as k:
        np.testing.assert_array_equal(read_encoding(s, "vlad"), read_encoding(k, "vlad"))


def test_models_want_more_than_the_sample_from_the_source_or_the_store(store, tmp_path,
                                                                       cli_env):
    """VLAD with 16 centers wants 4,096 rows, more than the 2,500 of the codebook sample: a
    store kept without descriptors extracts them again from the source, and learns the same
    centers as a store that kept them."""
    kept = tmp_path / "kept"
    shutil.copytree(store, kept)
    with h5py.File(store / "store.h5", "r+") as f:
        del f["descriptors"]
    assert len(np.load(store / "sample.npy")) < 16 * 256
    source = json.loads((store / "manifest.json").read_text())["job"]["source"]
    run_cli("aggregate", store, "--method", "vlad", "--centers", 16, "--source", source, "-q",
            env=cli_env, check=True)
    run_cli("aggregate", kept, "--method", "vlad", "--centers", 16, "-q", env=cli_env,
            check=True)
    with Store(store) as s, Store(kept) as k:
        a, b = s.h5["models/vlad/kmeans-vlad"], k.h5["models/vlad/kmeans-vlad"]
        assert "extracted again from the source" in a.attrs["learned_from"]
        assert "the store's descriptors" in b.attrs["learned_from"]
        assert a.attrs["rows"] == b.attrs["rows"] > len(np.load(store / "sample.npy"))
        np.testing.assert_array_equal(a["centers"][:], b["centers"][:])


def test_resumed_aggregate_keeps_the_models_it_started_with(store, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    shutil.copytree(store, clean)
    aggregate(None, clean, "vlad", None, {"centers": 4}, 1, progress=False, report=_quiet)
    real = agg.encode_shard
    calls = []

    def dies_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(agg, "encode_shard", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        aggregate(None, store, "vlad", None, {"centers": 4}, 1, progress=False, report=_quiet)
    monkeypatch.setattr(agg, "encode_shard", real)

    def never(*a, **k):
        raise AssertionError("a resumed run learned its models again")

    monkeypatch.setattr(agg, "_learn_models", never)
    aggregate(None, store, "vlad", None, {"centers": 4}, 1, progress=False, report=_quiet)
    with Store(store) as s, Store(clean) as c:
        np.testing.assert_array_equal(s.h5["models/vlad/kmeans-vlad/centers"][:],
                                      c.h5["models/vlad/kmeans-vlad/centers"][:])
        np.testing.assert_array_equal(read_encoding(s, "vlad"), read_encoding(c, "vlad"))


@pytest.mark.parametrize("jobs", [1, 2])
def test_models_are_learned_on_the_cores_jobs_gives(store, monkeypatch, jobs):
    # VLAD's centers are learned in the job's own process: its BLAS threads follow
    # --jobs, and are given back after.
    from threadpoolctl import threadpool_limits
    seen = record_blas_threads(monkeypatch, agg, "_learn_models")
    with threadpool_limits(2, user_api="blas"):
        aggregate(None, store, "vlad", None, {"centers": 8}, jobs, progress=False,
                  report=_quiet)
        assert blas_thread_counts() == [2]
    assert seen == [[jobs]]

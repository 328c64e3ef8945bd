"""Fisher vectors of descriptors augmented by their positions (``--xy-weight``): the GMM is
learned on PCA dims + 2 from the sampled (train) images, the option is recorded with the
encoding and its GMM, and a store encoded ``--like`` reproduces it."""
import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import package_env, run_cli
from features.encodings.rows import encode_rows
from features.store import Store

SMALL = ["--preset", "sift", "--words", "32", "--max-side", "160", "-q"]
XY = ["--components", "4", "--pca-dims", "8", "--xy-weight", "3"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory, small_set):
    """A train store (4 images of each photo) with a fisher encoding augmented by positions,
    and a val store of the other images encoded --like it."""
    env = package_env()
    tmp = tmp_path_factory.mktemp("xy")
    train_src, val_src = tmp / "train-images", tmp / "val-images"
    for photo in sorted(p.name for p in small_set.iterdir()):
        files = sorted((small_set / photo).iterdir())
        for src, part in ((train_src, files[:4]), (val_src, files[4:])):
            (src / photo).mkdir(parents=True)
            for f in part:
                shutil.copy(f, src / photo / f.name)
    train, val = tmp / "train", tmp / "val"
    run_cli("run", train_src, "-o", train, *SMALL, env=env, check=True)
    run_cli("aggregate", train, "--method", "fisher", "--name", "fxy", *XY, "-q", env=env,
            check=True)
    run_cli("run", val_src, "-o", val, "--like", train, "--encodings", "fxy", "-q", env=env,
            check=True)
    return train, val, env


def _rows_again(store, name):
    """The encoding's rows computed anew from the store's descriptors, frames and models."""
    with Store(store) as s:
        h5 = s.h5
        attrs = h5["encodings/" + name].attrs
        models = s.models(name)
        return encode_rows("fisher", json.loads(attrs["params"]), offsets=h5["offsets"][:],
                           widths=s.column("width"), heights=s.column("height"),
                           descriptors=h5["descriptors"][:], frames=h5["frames"][:],
                           models=models, units=s.config.frame_units), h5[
            "encodings/" + name][:].astype(np.float32)


def test_the_store_records_the_weight_and_a_gmm_of_descriptors_and_positions(stores):
    train, _, _ = stores
    with h5py.File(train / "store.h5") as f:
        enc = f["encodings/fxy"]
        params = json.loads(enc.attrs["params"])
        assert params["xy_weight"] == 3.0 and enc.attrs["xy_weight"] == 3.0
        assert enc.shape[1] == 2 * 4 * (8 + 2)
        gmm = f["models/fxy/gmm"]
        assert gmm["means"].shape == gmm["covariances"].shape == (4, 10)
        assert gmm.attrs["xy_weight"] == 3.0 and gmm.attrs["dim"] == 10
        assert f["models/fxy/pca/components"].shape == (8, 128)
        # the positions' means lie within the image (weight 3: within +-1.5), and the GMM
        # saw them spread (their variances are not at the floor)
        means, var = gmm["means"][:, 8:], gmm["covariances"][:, 8:]
        assert np.all(np.abs(means) <= 1.5) and np.all(var > 1e-2)
        # learned from the store's descriptors and their frames, not the codebook's sample
        assert "sampled images" in gmm.attrs["learned_from"]
    rows, stored = _rows_again(train, "fxy")
    np.testing.assert_allclose(rows, stored, atol=2e-3)      # stored as float16


def test_like_reproduces_the_option_and_the_models(stores):
    train, val, env = stores
    with h5py.File(train / "store.h5") as a, h5py.File(val / "store.h5") as b:
        assert a["encodings/fxy"].attrs["params"] == b["encodings/fxy"].attrs["params"]
        assert (json.loads(a["encodings/fxy"].attrs["models"])
                == json.loads(b["encodings/fxy"].attrs["models"]))
        for k in ("means", "covariances", "priors"):
            np.testing.assert_array_equal(a["models/fxy/gmm/" + k][:], b["models/fxy/gmm/" + k][:])
    rows, stored = _rows_again(val, "fxy")
    np.testing.assert_allclose(rows, stored, atol=2e-3)
    for store in (train, val):
        # the models are those the encoding recorded (checksums): verify finds them sound
        proc = run_cli("verify", store, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_another_weight_learns_its_own_gmm_and_the_same_options_are_kept(stores, tmp_path):
    from features.pipeline.aggregate import aggregate
    train, _, env = stores
    store = tmp_path / "store"
    shutil.copytree(train, store)
    run_cli("aggregate", store, "--method", "fisher", "--name", "fxy1", "--components", "4",
            "--pca-dims", "8", "--xy-weight", "1", "-q", env=env, check=True)
    run_cli("aggregate", store, "--method", "fisher", "--name", "plain", "--components", "4",
            "--pca-dims", "8", "-q", env=env, check=True)
    with h5py.File(store / "store.h5") as f:
        # same sizes, another weight: not fxy's GMM reused, one of its own
        assert f["models/fxy1/gmm"].attrs["xy_weight"] == 1.0
        assert not np.array_equal(f["models/fxy/gmm/means"][:], f["models/fxy1/gmm/means"][:])
        assert "xy_weight" not in json.loads(f["encodings/plain"].attrs["params"])
        assert f["models/plain/gmm/means"].shape == (4, 8)
        assert "xy_weight" not in f["models/plain/gmm"].attrs
    # the same options again with exist_ok (what `features run --encodings` does on a
    # rerun): store.h5 is left as it is
    before = (store / "store.h5").stat().st_mtime_ns
    aggregate(None, store, "fisher", "fxy", {"components": 4, "pca_dims": 8, "xy_weight": 3},
              exist_ok=True, progress=False, report=lambda line: None)
    assert (store / "store.h5").stat().st_mtime_ns == before
    proc = run_cli("aggregate", store, "--method", "fisher", "--name", "fxy", *XY, "-q",
                   env=env)
    assert proc.returncode != 0 and "already has encodings/fxy" in proc.stderr


@pytest.mark.parametrize("bad", ["0", "-2", "nan", "inf"])
def test_a_bad_weight_is_one_line_naming_it(stores, bad):
    train, _, env = stores
    proc = run_cli("aggregate", train, "--method", "fisher", "--name", "bad", "--xy-weight",
                   bad, "-q", env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--xy-weight must be a finite number > 0, got" in lines[0], lines
    with h5py.File(train / "store.h5") as f:
        assert "encodings/bad" not in f


def test_a_store_without_descriptors_draws_positions_from_the_source(tmp_path, small_set):
    env = package_env()
    store = tmp_path / "store"
    run_cli("run", small_set, "-o", store, *SMALL, "--no-descriptors", env=env, check=True)
    proc = run_cli("aggregate", store, "--method", "fisher", *XY, "-q", env=env)
    assert proc.returncode != 0 and "--source" in proc.stderr
    run_cli("aggregate", store, "--method", "fisher", *XY, "--source", small_set, "-q",
            env=env, check=True)
    with h5py.File(store / "store.h5") as f:
        assert f["encodings/fisher"].shape[1] == 2 * 4 * 10
        assert "extracted again" in f["models/fisher/gmm"].attrs["learned_from"]
        assert np.abs(f["encodings/fisher"][:].astype(np.float32)).sum() > 0

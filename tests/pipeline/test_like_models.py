"""`features run VAL --like TRAIN` reuses the train store's models (PCA, GMM, VLAD centers), and
`features baseline --val` refuses a val store whose models differ from the train store's."""
import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import run_cli

# Small models: the point is which arrays are used, not their quality.
FISHER = ["--components", "4", "--pca-dims", "8"]
VLAD = ["--centers", "4"]
SMALL = ["--preset", "sift", "--words", "32", "--max-side", "256", "-q"]


def _models(store):
    """(encoding, model) -> (arrays, checksum) of models/ENCODING/MODEL."""
    with h5py.File(store / "store.h5") as f:
        return {(enc, name): ({k: g[k][:] for k in g}, g.attrs.get("checksum"))
                for enc, group in f["models"].items() for name, g in group.items()}


def _one_line_exit_2(proc, message):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error: "), proc.stderr
    assert message in lines[0], lines[0]


@pytest.fixture(scope="module")
def stores(tmp_path_factory, small_set):
    """A train store with fisher and vlad encodings (small models, not the defaults), and a
    val store of other images encoded --like it with both (4 images of each photo train, the
    other 2 are the val images: a val image that is a training image is refused)."""
    import os
    from pathlib import Path
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + \
        env.get("PYTHONPATH", "")
    tmp = tmp_path_factory.mktemp("like")
    train_src, val_src = tmp / "train-images", tmp / "val-images"
    for photo in sorted(p.name for p in small_set.iterdir()):
        files = sorted((small_set / photo).iterdir())
        for src, part in ((train_src, files[:4]), (val_src, files[4:])):
            (src / photo).mkdir(parents=True)
            for f in part:
                shutil.copy(f, src / photo / f.name)
    train, val = tmp / "train", tmp / "val"
    run_cli("run", train_src, "-o", train, *SMALL, env=env, check=True)
    run_cli("aggregate", train, "--method", "fisher", *FISHER, "-q", env=env, check=True)
    run_cli("aggregate", train, "--method", "vlad", *VLAD, "-q", env=env, check=True)
    run_cli("run", val_src, "-o", val, "--like", train, "--encodings", "fisher,vlad", "-q",
            env=env, check=True)
    return train, val, val_src, env


def test_like_reuses_the_train_models(stores):
    train, val, _, _ = stores
    assert not (val / "sample.npy").exists()          # nothing was learned in the val store
    ours, theirs = _models(train), _models(val)
    assert set(ours) == set(theirs) == {("fisher", "pca"), ("fisher", "gmm"),
                                        ("vlad", "kmeans-vlad")}
    for name, (arrays, checksum) in ours.items():
        val_arrays, val_checksum = theirs[name]
        assert checksum and val_checksum == checksum
        assert set(val_arrays) == set(arrays)
        for k in arrays:
            assert val_arrays[k].dtype == arrays[k].dtype
            np.testing.assert_array_equal(val_arrays[k], arrays[k])
    with h5py.File(train / "store.h5") as a, h5py.File(val / "store.h5") as b:
        for name in ("fisher", "vlad"):
            # the options (4 components, not the default 256) are the train store's too
            assert a["encodings/" + name].attrs["params"] == b["encodings/" + name].attrs["params"]
            used = json.loads(b["encodings/" + name].attrs["models"])
            assert used == json.loads(a["encodings/" + name].attrs["models"])
            assert set(used) == ({"pca", "gmm"} if name == "fisher" else {"kmeans-vlad"})
        assert b["encodings/fisher"].shape[1] == 2 * 4 * 8
    # bovw: the train store's idf weights, not the val images' own
    with h5py.File(train / "store.h5") as a, h5py.File(val / "store.h5") as b:
        np.testing.assert_array_equal(a["encodings/idf"][:], b["encodings/idf"][:])
        assert b["encodings/bovw"].attrs["models"] == a["encodings/bovw"].attrs["models"]
        assert json.loads(b["encodings/bovw"].attrs["models"]) == {
            "idf": b["encodings/idf"].attrs["checksum"]}
    proc = run_cli("baseline", train, "--val", val, "--json", "--epochs", "2",
                   "--classifier", "svm", env=stores[3], check=True)
    r = json.loads(proc.stdout)
    assert r["split"] == "val store" and {x["encoding"] for x in r["results"]} >= {"fisher",
                                                                                    "vlad"}


def test_aggregate_on_a_like_store_reuses_the_train_models(stores, tmp_path):
    train, val, _, env = stores
    copy = tmp_path / "val"
    shutil.copytree(val, copy)
    # a new name: computed now, from the train store's models, with its options
    run_cli("aggregate", copy, "--method", "fisher", "--name", "fisher2", "--grids", "1x1,2x2",
            "-q", env=env, check=True)
    with h5py.File(train / "store.h5") as a, h5py.File(copy / "store.h5") as b:
        assert b["encodings/fisher2"].shape[1] == 5 * 2 * 4 * 8
        for k in ("means", "covariances", "priors"):
            np.testing.assert_array_equal(a["models/fisher/gmm/" + k][:],
                                          b["models/fisher2/gmm/" + k][:])
        assert json.loads(b["encodings/fisher2"].attrs["models"]) == json.loads(
            a["encodings/fisher"].attrs["models"])
    # options the train store's models do not fit: refused, never learned
    proc = run_cli("aggregate", copy, "--method", "fisher", "--name", "fisher3",
                   "--components", "8", env=env)
    _one_line_exit_2(proc, "models/fisher/gmm/means is 4 x 8, the options need 8 x 8")
    assert not (copy / "sample.npy").exists()


def test_like_refuses_encodings_whose_models_the_train_store_lacks(stores, tmp_path, small_set):
    _, _, val_src, env = stores
    plain = tmp_path / "plain"
    run_cli("run", small_set, "-o", plain, *SMALL, env=env, check=True)
    proc = run_cli("run", val_src, "-o", tmp_path / "v", "--like", plain, "--encodings", "fisher",
                   env=env)
    _one_line_exit_2(proc, "has no fisher encoding")
    assert not (tmp_path / "v" / "store.h5").exists()


def test_baseline_refuses_a_val_store_with_other_models(stores, tmp_path):
    train, val, _, env = stores
    # a val store that learned its own models: from a descriptor sample of its own images
    other = tmp_path / "other"
    shutil.copytree(val, other)
    manifest = json.loads((other / "manifest.json").read_text())
    del manifest["steps"]["codebook"]["like"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    with h5py.File(other / "store.h5") as f:
        np.save(other / "sample.npy", f["descriptors"][:])
    run_cli("aggregate", other, "--method", "fisher", *FISHER, "--replace", "-q", env=env,
            check=True)
    proc = run_cli("baseline", train, "--val", other, "--encoding", "fisher", "--epochs", "2",
                   env=env)
    _one_line_exit_2(proc, "computed encodings/fisher with another models/fisher/gmm")
    # its vlad still uses the train store's centers: that one is accepted
    proc = run_cli("baseline", train, "--val", other, "--encoding", "vlad", "--epochs", "2",
                   "--classifier", "svm", env=env, check=True)
    # another codebook is refused first, whatever the encoding
    with h5py.File(other / "store.h5", "r+") as f:
        f["codebook/centroids"].attrs["checksum"] = "0" * 64
    proc = run_cli("baseline", train, "--val", other, "--encoding", "vlad", env=env)
    _one_line_exit_2(proc, "another codebook")


def test_baseline_refuses_a_val_store_weighed_by_its_own_idf(stores, tmp_path):
    train, val, _, env = stores
    with h5py.File(train / "store.h5") as f:
        own_idf = f["encodings/idf"][:] * 2   # not the train store's
    other = tmp_path / "other"
    shutil.copytree(val, other)
    from features.store import idf_checksum
    with h5py.File(other / "store.h5", "r+") as f:
        f["encodings/idf"][:] = own_idf
        f["encodings/bovw"].attrs["models"] = json.dumps({"idf": idf_checksum(own_idf)})
    proc = run_cli("baseline", train, "--val", other, "--encoding", "bovw", "--epochs", "2",
                   env=env)
    _one_line_exit_2(proc, "computed encodings/bovw with another encodings/idf")

"""Each encoding owns its models (models/ENCODING/MODEL): replacing one never touches
another's, `verify` checks them against the checksums the encodings recorded, `--like`
reproduces every encoding of the train store, and version-1 stores (models/MODEL) still
read. Models are learned from as many descriptors as they need, and say so."""
import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import run_cli

SMALL = ["--preset", "sift", "--words", "32", "--max-side", "256", "-q"]
BIG = ["--components", "8", "--pca-dims", "16"]      # "fisher": 2 x 8 x 16 = 256 dims
F4 = ["--components", "4", "--pca-dims", "8"]        # "f4": 2 x 4 x 8 = 64 dims


def _checksums(store, name):
    with h5py.File(store / "store.h5") as f:
        return json.loads(f["encodings/" + name].attrs["models"])


def _arrays(store, path):
    with h5py.File(store / "store.h5") as f:
        return {k: f[path][k][:] for k in f[path]}


def _one_line_exit_2(proc, message):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error: "), proc.stderr
    assert message in lines[0], lines[0]


def _verify(store, env):
    proc = run_cli("verify", store, "--json", env=env)
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def train(tmp_path_factory, small_set):
    """A store with two fisher encodings of different sizes, and the images of a val store."""
    import os
    from pathlib import Path
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + \
        env.get("PYTHONPATH", "")
    tmp = tmp_path_factory.mktemp("own")
    val_src = tmp / "val-images"
    for photo in sorted(p.name for p in small_set.iterdir()):
        (val_src / photo).mkdir(parents=True)
        for f in sorted((small_set / photo).iterdir())[4:]:
            shutil.copy(f, val_src / photo / f.name)
    store = tmp / "train"
    run_cli("run", small_set, "-o", store, *SMALL, env=env, check=True)
    run_cli("aggregate", store, "--method", "fisher", *BIG, "-q", env=env, check=True)
    run_cli("aggregate", store, "--method", "fisher", "--name", "f4", *F4, "-q", env=env,
            check=True)
    return store, val_src, env


def test_each_encoding_keeps_its_models(train, tmp_path):
    store, _, env = train
    with h5py.File(store / "store.h5") as f:
        assert f.attrs["version"] == 2
        assert set(f["models"]) == {"fisher", "f4"}
        assert f["models/fisher/gmm/means"].shape == (8, 16)
        assert f["models/f4/gmm/means"].shape == (4, 8)
        assert f["encodings/fisher"].shape[1] == 256 and f["encodings/f4"].shape[1] == 64
        for name in ("fisher", "f4"):
            for model, checksum in json.loads(f["encodings/" + name].attrs["models"]).items():
                assert f[f"models/{name}/{model}"].attrs["checksum"] == checksum
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    fisher = _arrays(copy, "models/fisher/gmm")
    # replacing f4 with other sizes leaves fisher's models and record alone
    run_cli("aggregate", copy, "--method", "fisher", "--name", "f4", "--components", "2",
            "--pca-dims", "8", "--replace", "-q", env=env, check=True)
    with h5py.File(copy / "store.h5") as f:
        assert f["models/f4/gmm/means"].shape == (2, 8)
    for k, v in _arrays(copy, "models/fisher/gmm").items():
        np.testing.assert_array_equal(v, fisher[k])
    assert _checksums(copy, "fisher") == _checksums(store, "fisher")
    code, result = _verify(copy, env)
    assert code == 0 and result["sound"], result


def test_verify_names_a_damaged_or_missing_model(train, tmp_path, small_set):
    store, _, env = train
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    with h5py.File(copy / "store.h5", "r+") as f:
        f["models/fisher/gmm/means"][0, 0] += 1.0
        del f["models/f4/pca"]
    code, result = _verify(copy, env)
    assert code != 0 and not result["sound"]
    problems = [d["problem"] for d in result["damage"]]
    assert any(p.startswith("models/fisher/gmm is not the gmm encodings/fisher was computed "
                            "with") for p in problems), problems
    assert any(p.startswith("models/f4/pca is missing") for p in problems), problems
    assert len(problems) == 2, problems
    proc = run_cli("verify", copy, env=env)
    assert proc.returncode != 0 and "models/fisher/gmm" in proc.stdout + proc.stderr
    # a store --like the damaged one refuses it with one line, before encoding anything
    proc = run_cli("run", small_set, "-o", tmp_path / "v", "--like", copy, "--encodings",
                   "fisher", env=env)
    _one_line_exit_2(proc, "models/fisher/gmm is not the gmm encodings/fisher was computed")


def test_like_reproduces_each_encoding(train, tmp_path):
    store, val_src, env = train
    val, one = tmp_path / "val", tmp_path / "one"
    run_cli("run", val_src, "-o", val, "--like", store, "--encodings", "fisher", "-q",
            env=env, check=True)
    run_cli("aggregate", val, "--method", "fisher", "--name", "f4", "-q", env=env, check=True)
    # or in one run, naming the train store's encodings
    run_cli("run", val_src, "-o", one, "--like", store, "--encodings", "fisher,f4", "-q",
            env=env, check=True)
    for name in ("fisher", "f4"):
        assert _checksums(one, name) == _checksums(store, name)
    with h5py.File(one / "store.h5") as a, h5py.File(val / "store.h5") as b:
        for name in ("fisher", "f4"):
            np.testing.assert_array_equal(a["encodings/" + name][:], b["encodings/" + name][:])
    proc = run_cli("run", val_src, "-o", tmp_path / "x", "--like", store, "--encodings", "f5",
                   env=env)
    _one_line_exit_2(proc, "unknown encoding(s) f5; choose from bovw, spm, vlad, fisher")
    with h5py.File(store / "store.h5") as a, h5py.File(val / "store.h5") as b:
        for name in ("fisher", "f4"):
            assert b["encodings/" + name].shape[1] == a["encodings/" + name].shape[1]
            assert b["encodings/" + name].attrs["params"] == a["encodings/" + name].attrs["params"]
            for model in ("pca", "gmm"):
                ga, gb = a[f"models/{name}/{model}"], b[f"models/{name}/{model}"]
                for k in ga:
                    np.testing.assert_array_equal(gb[k][:], ga[k][:])
                assert gb.attrs["like_encoding"] == name
    assert _checksums(val, "fisher") == _checksums(store, "fisher")
    assert _checksums(val, "f4") == _checksums(store, "f4")
    assert _checksums(val, "f4") != _checksums(val, "fisher")
    code, result = _verify(val, env)
    assert code == 0, result


def _as_version_1(store, name="fisher"):
    """Rewrite a store as a version-1 store keeps models: models/MODEL, one of each kind."""
    with h5py.File(store / "store.h5", "r+") as f:
        for model in list(f[f"models/{name}"]):
            f.move(f"models/{name}/{model}", f"models/{model}")
        for other in [k for k in f["models"] if k not in ("pca", "gmm", "kmeans-vlad")]:
            del f["models/" + other]
        del f["encodings/f4"]
        f.attrs["version"] = 1


def test_a_version_1_store_still_reads(train, tmp_path, small_set):
    store, val_src, env = train
    old = tmp_path / "old"
    shutil.copytree(store, old)
    _as_version_1(old)
    code, result = _verify(old, env)
    assert code == 0, result
    info = json.loads(run_cli("info", old, "--json", env=env, check=True).stdout)
    assert info["models"]["fisher"]["gmm"]["path"] == "models/gmm"
    # a val store --like it gets the same models and dimensions
    val = tmp_path / "val"
    run_cli("run", val_src, "-o", val, "--like", old, "--encodings", "fisher", "-q", env=env,
            check=True)
    assert _checksums(val, "fisher") == _checksums(store, "fisher")
    with h5py.File(val / "store.h5") as f:
        assert f["encodings/fisher"].shape[1] == 256
    # a new encoding of other sizes: models of its own; the version-1 models stay fisher's
    run_cli("aggregate", old, "--method", "fisher", "--name", "f2", "--components", "2",
            "--pca-dims", "8", "-q", env=env, check=True)
    with h5py.File(old / "store.h5") as f:
        assert f.attrs["version"] == 2
        assert f["models/f2/gmm/means"].shape == (2, 8)
        assert f["models/gmm/means"].shape == (8, 16)
    code, result = _verify(old, env)
    assert code == 0, result


def test_a_version_1_model_overwritten_is_found(train, tmp_path, small_set):
    """What version-1 code did on `aggregate --name f4 --replace`: models/gmm overwritten,
    encodings/fisher naming a GMM that is gone."""
    store, _, env = train
    old = tmp_path / "old"
    shutil.copytree(store, old)
    _as_version_1(old)
    with h5py.File(old / "store.h5", "r+") as f:
        for k in ("means", "covariances"):
            data = f["models/gmm/" + k][:4, :]
            del f["models/gmm/" + k]
            f["models/gmm/" + k] = data
    code, result = _verify(old, env)
    assert code != 0
    assert any(d["problem"].startswith("models/gmm is not the gmm encodings/fisher")
               for d in result["damage"]), result
    proc = run_cli("run", small_set, "-o", tmp_path / "v", "--like", old, "--encodings",
                   "fisher", env=env)
    _one_line_exit_2(proc, "models/gmm is not the gmm encodings/fisher was computed with")


def test_a_newer_store_is_refused_with_one_line(train, tmp_path):
    store, _, env = train
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    with h5py.File(copy / "store.h5", "r+") as f:
        f.attrs["version"] = 99
    _one_line_exit_2(run_cli("info", copy, env=env), "format version 99, newer than")


def test_models_are_learned_from_the_rows_they_need(train, tmp_path):
    """A codebook sample too small for the model: rows are drawn from the store's
    descriptors, and a model the whole store cannot feed warns with one line."""
    from features.encodings.training import rows_needed
    store, _, env = train
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    np.save(copy / "sample.npy", np.load(copy / "sample.npy")[:100])
    from features.pipeline.model_rows import sampled_images
    from features.store import Store
    with Store(copy) as s:
        sampled = sampled_images(s)
        offsets = s.h5["offsets"][:]
        total = int((offsets[sampled + 1] - offsets[sampled]).sum())
        # the images pass 1 sampled, not every image of the store
        assert 0 < len(sampled) < s.n_images and total < int(offsets[-1])
    proc = run_cli("aggregate", copy, "--method", "fisher", "--name", "f3", "--components",
                   "3", "--pca-dims", "8", env=env, check=True)
    assert "warning" not in proc.stderr
    with h5py.File(copy / "store.h5") as f:
        g, p = f["models/f3/gmm"], f["models/f3/pca"]
        wanted = rows_needed("gmm", {"components": 3})[1]
        assert g.attrs["rows_wanted"] == wanted and g.attrs["rows"] == min(wanted, total)
        assert g.attrs["rows"] > 100
        assert "the store's descriptors" in g.attrs["learned_from"]
        assert p.attrs["rows"] == min(rows_needed("pca", {"dim": 128})[1], total)
    assert "models/f3/gmm: 3 components x 8 dims" in proc.stdout
    assert "the store's descriptors" in proc.stdout
    # more components than the store's descriptors can estimate: learned, with a warning
    k = total // 100 + 1
    proc = run_cli("aggregate", copy, "--method", "fisher", "--name", "fk", "--components",
                   str(k), "--pca-dims", "8", "-q", env=env, check=True)
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith("features: warning: models/fk/gmm was learned from "
                                  f"{total:,} descriptors, fewer than the {100 * k:,} it needs")
    assert "--components" in warnings[0] and "--sample-images" in warnings[0]
    with h5py.File(copy / "store.h5") as f:
        assert f["models/fk/gmm"].attrs["rows"] == total
        assert f["models/fk/gmm"].attrs["rows_floor"] == 100 * k
    info = json.loads(run_cli("info", copy, "--json", env=env, check=True).stdout)
    assert info["models"]["fk"]["gmm"]["rows"] == total
    text = run_cli("info", copy, env=env, check=True).stdout
    assert "models/fk/gmm: " in text and f"learned from {total:,} descriptors" in text


def test_models_draw_only_from_the_images_baseline_treats_as_seen(train):
    """The images a model's rows come from are those `baseline` keeps out of scoring."""
    from features.baseline.leaks import model_sample_rows
    from features.pipeline.model_rows import sampled_images
    from features.store import Store
    store, _, _ = train
    with Store(store) as s:
        np.testing.assert_array_equal(sampled_images(s), model_sample_rows(s))

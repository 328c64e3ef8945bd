"""`features baseline` never scores an image it trained on or that shaped the features: a val
store that is the train store, a copy of it, or shares images with it (by file bytes, or by
key in stores without digests) is refused; the images the codebook and models were learned
from never score."""
import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import run_cli
from features.baseline import leaks
from features.baseline.experiment import evaluate
from features.baseline.synthetic import write_synthetic_store
from features.cli import main
from features.store import Store

CLASSES = ["n02085620", "n02085782", "n04285008"]


def _synthetic(path, seed, per_class=12):
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    return write_synthetic_store(path, labels, classes=CLASSES, seed=seed,
                                 centroids=np.ones((16, 128)), dense={"fisher": (16, "float32")})


def _baseline(capsys, *args):
    code = main(["baseline", *map(str, args), "--epochs", "2", "--classifier", "svm"])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(code, err, *messages):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error: "), err
    for m in messages:
        assert m in lines[0], lines[0]


def test_val_store_that_is_the_train_store_is_refused(tmp_path, capsys):
    train = _synthetic(tmp_path / "train", seed=1)
    code, _, err = _baseline(capsys, train, "--val", train)
    _one_line(code, err, "is the train store")
    code, _, err = _baseline(capsys, train, "--val", tmp_path / "." / "train")
    _one_line(code, err, "is the train store")
    shutil.copytree(train, tmp_path / "copy")
    # a copy: the same file digests (the synthetic store records no shards)
    code, _, err = _baseline(capsys, train, "--val", tmp_path / "copy")
    _one_line(code, err, "shares 36 images", "the same file bytes")


def test_stores_without_digests_are_compared_by_key(tmp_path, capsys):
    train = _synthetic(tmp_path / "train", seed=1)
    val = _synthetic(tmp_path / "val", seed=2, per_class=4)
    code, out, _ = _baseline(capsys, train, "--val", val, "--json")
    assert code == 0
    assert json.loads(out)["leak_check"] == \
        "no scored image is a training image (compared by sha256 of the file bytes)"
    # the same keys, other images (other digests): accepted; without digests, refused
    for store in (train, val):
        with h5py.File(store / "store.h5", "r+") as f:
            del f["images/sha256"]
    code, _, err = _baseline(capsys, train, "--val", val)
    _one_line(code, err, "shares 4 images", "the same key", "'n02085620/0000000.png'")


def test_seeded_split_never_scores_the_model_sample(small_store):
    with Store(small_store) as store:
        assert store.h5["codebook"].attrs["sample_splits"] == "all"
        seen = leaks.model_sample_rows(store)
        # small_config samples 24 images: all of them
        assert len(seen) == store.n_images == 24
        with pytest.raises(Exception, match="leaves none to score"):
            evaluate(store, epochs=1, classifiers=("svm",))


def test_seeded_split_on_a_store_with_unseen_images(tmp_path, small_set, cli_env):
    out = tmp_path / "s"
    run_cli("run", small_set, "-o", out, "--words", "16", "--max-side", "256",
            "--sample-images", "8", "-q", env=cli_env, check=True)
    with Store(out) as store:
        seen = leaks.model_sample_rows(store)
        assert len(seen) == 8
        r = evaluate(store, epochs=1, classifiers=("svm",), val_fraction=0.5)
        assert len(r["_val"].rows) > 0
        assert not np.intersect1d(r["_val"].rows, seen).size
        assert "the 8 images the codebook and the models were learned from" in r["leak_check"]


def test_val_images_that_are_training_images_under_other_names(tmp_path, small_set, cli_env):
    """The same file bytes under other names: found by the digests of images/sha256."""
    train_src, val_src = tmp_path / "train-images", tmp_path / "val-images"
    for photo in sorted(p.name for p in small_set.iterdir()):
        files = sorted((small_set / photo).iterdir())
        (train_src / photo).mkdir(parents=True)
        (val_src / photo).mkdir(parents=True)
        for f in files[:4]:
            shutil.copy(f, train_src / photo / f.name)
        for f in files[4:]:
            shutil.copy(f, val_src / photo / f.name)
    # two training images among the val images, renamed
    shutil.copy(sorted((train_src / "astronaut").iterdir())[0],
                val_src / "astronaut" / "renamed.jpg")
    shutil.copy(sorted((train_src / "coins").iterdir())[1], val_src / "coins" / "other.jpg")
    small = ["--words", "16", "--max-side", "256", "-q"]
    train, val = tmp_path / "train", tmp_path / "val"
    run_cli("run", train_src, "-o", train, *small, env=cli_env, check=True)
    run_cli("run", val_src, "-o", val, "--like", train, "-q", env=cli_env, check=True)
    import hashlib
    with h5py.File(train / "store.h5") as f:
        keys = f["images/key"].asstr()[:]
        digests = f["images/sha256"].asstr()[:]
    for k, d in zip(keys, digests):
        assert d == hashlib.sha256((train_src / k).read_bytes()).hexdigest()
    proc = run_cli("baseline", train, "--val", val, "--epochs", "2", env=cli_env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "shares 2 images" in lines[0], proc.stderr
    assert "the same file bytes" in lines[0] and "is the training image" in lines[0]

"""train/ val/ folder trees (one source, images/split) and val stores encoded --like."""
import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import run_cli
from features.sources import open_source

PHOTOS = ("astronaut", "chelsea", "coins", "rocket")


@pytest.fixture(scope="module")
def split_tree(tmp_path_factory, small_set):
    """train/<photo>/ with 4 copies of each photo, val/<photo>/ with the other 2 (one photo
    has no val folder: the classes are the union), test/ one unlabelled image."""
    root = tmp_path_factory.mktemp("splits") / "data"
    for i, photo in enumerate(PHOTOS):
        files = sorted((small_set / photo).iterdir())
        for split, part in (("train", files[:4]), ("val", files[4:])):
            if split == "val" and i == 3:
                continue  # a class only in train: the classes are the union
            (root / split / photo).mkdir(parents=True, exist_ok=True)
            for f in part:
                shutil.copy(f, root / split / photo / f.name)
    (root / "test").mkdir()
    shutil.copy(sorted((small_set / PHOTOS[0]).iterdir())[0], root / "test" / "x.jpg")
    return root


def test_split_tree_is_one_source(split_tree):
    src = open_source(str(split_tree))
    assert src.kind == "split-tree" and src.classes == sorted(PHOTOS)
    items = list(src)
    assert len(items) == 4 * 4 + 3 * 2 + 1
    by_key = {it.key: it.label for it in items}
    assert by_key["test/x.jpg"] == -1
    assert {by_key[k] for k in by_key if k.startswith("val/chelsea/")} == {
        src.classes.index("chelsea")}
    assert {k.split("/")[0] for k in by_key} == {"train", "val", "test"}


def test_split_store_then_val_store_like_train(tmp_path, split_tree, small_set, cli_env):
    args = ["--preset", "sift", "--words", "32", "--max-side", "256", "-q"]
    train = tmp_path / "train"
    run_cli("run", split_tree, "-o", train, *args, env=cli_env, check=True)
    with h5py.File(train / "store.h5") as f:
        split = f["images/split"].asstr()[:]
        keys = f["images/key"].asstr()[:]
        checksum = f["codebook/centroids"].attrs["checksum"]
    assert all(k.startswith(s + "/") for k, s in zip(keys, split))
    proc = run_cli("baseline", train, "--json", "--epochs", "3", "--encoding", "bovw",
                   env=cli_env, check=True)
    r = json.loads(proc.stdout)
    assert r["split"] == "source splits" and r["val_images"] == 6
    assert r["train_images"] + r["heldout_images"] == 16

    # a separate val store, encoded with the train store's codebook
    val = tmp_path / "val"
    run_cli("run", split_tree / "val", "-o", val, "--like", train, "-q", env=cli_env,
            check=True)
    assert not (val / "sample.npy").exists()  # no codebook of its own was learned
    with h5py.File(val / "store.h5") as f:
        assert f["codebook/centroids"].attrs["checksum"] == checksum
    proc = run_cli("baseline", train, "--val", val, "--json", "--epochs", "3",
                   "--encoding", "bovw", "--classifier", "svm", env=cli_env, check=True)
    r = json.loads(proc.stdout)
    assert r["split"] == "val store" and r["val_images"] == 6

    # a val store with a codebook of its own is refused
    other = tmp_path / "other"
    run_cli("run", split_tree / "val", "-o", other, *args, env=cli_env, check=True)
    proc = run_cli("baseline", train, "--val", other, env=cli_env)
    assert proc.returncode == 2 and "another codebook" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_split_tree_models_learn_from_train_only(tmp_path, split_tree, cli_env):
    """The codebook sample (and so every model) takes train/ images only, the store says so,
    and a store whose sample held val images (built before) is refused by `baseline`."""
    store = tmp_path / "s"
    # more images asked for than train/ holds: every train image, and no other
    run_cli("run", split_tree, "-o", store, "--words", "16", "--max-side", "256",
            "--sample-images", "100", "-q", env=cli_env, check=True)
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["steps"]["sample"]["images"] == 16
    assert manifest["steps"]["sample"]["splits"] == "train"
    with h5py.File(store / "store.h5") as f:
        assert f["codebook"].attrs["sample_splits"] == "train"
        assert f["codebook"].attrs["sample_images"] == 16
    proc = run_cli("baseline", store, "--json", "--epochs", "2", "--classifier", "svm",
                   env=cli_env, check=True)
    r = json.loads(proc.stdout)
    assert r["split"] == "source splits" and r["val_images"] == 6
    assert "sha256" in r["leak_check"]

    # a store built before: no sample_splits, its sample drawn from every image
    with h5py.File(store / "store.h5", "r+") as f:
        del f["codebook"].attrs["sample_splits"]
    proc = run_cli("baseline", store, "--epochs", "2", env=cli_env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "a sample holding 6 images of its val split" in lines[0]
    assert "'val/" in lines[0]


def test_split_tree_val_image_that_is_a_train_image(tmp_path, split_tree, cli_env):
    root = tmp_path / "data"
    shutil.copytree(split_tree, root)
    shutil.copy(sorted((root / "train" / "coins").iterdir())[0], root / "val" / "coins" / "dup.jpg")
    store = tmp_path / "s"
    run_cli("run", root, "-o", store, "--words", "16", "--max-side", "256", "-q", env=cli_env,
            check=True)
    proc = run_cli("baseline", store, "--epochs", "2", env=cli_env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "the val split of store" in lines[0]
    assert "shares 1 images" in lines[0] and "'val/coins/dup.jpg'" in lines[0]

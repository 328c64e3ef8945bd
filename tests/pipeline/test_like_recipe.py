"""`features run VAL --like TRAIN` reuses TRAIN's recipe: a recipe option that contradicts it
is refused with one line naming the option and TRAIN's value, one equal to it is accepted."""
import shutil

import h5py
import pytest

from features.cli import main


def _run(capsys, *args):
    code = main(["run", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def val_images(tmp_path, small_set):
    root = tmp_path / "val-images"
    for photo in ("astronaut", "coins"):
        (root / photo).mkdir(parents=True)
        for f in sorted((small_set / photo).iterdir())[:2]:
            shutil.copy(f, root / photo / f.name)
    return root


@pytest.mark.parametrize("options, message", [
    (["--preset", "phow"], "--preset phow contradicts the recipe of {train}, which --like "
                           "reuses (preset sift)"),
    (["--words", "50"], "--words 50 contradicts the recipe of {train}, which --like reuses "
                        "(words 64)"),
    (["--words", "64", "--max-side", "300"], "--max-side 300 contradicts"),
    (["--sample-images", "5"], "--sample-images 5 contradicts"),
    (["--no-descriptors"], "--no-descriptors contradicts"),
])
def test_like_refuses_options_that_contradict_the_recipe(capsys, tmp_path, small_store,
                                                         val_images, options, message):
    out = tmp_path / "val"
    code, _, err = _run(capsys, val_images, "-o", out, "--like", small_store, *options, "-q")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error: ")
    assert message.format(train=small_store) in lines[0], lines[0]
    assert not (out / "store.h5").exists()


def test_like_accepts_options_equal_to_the_recipe(capsys, tmp_path, small_store, val_images):
    out = tmp_path / "val"
    code, _, err = _run(capsys, val_images, "-o", out, "--like", small_store, "--preset", "sift",
                        "--words", "64", "--max-side", "256", "--shard-size", "5", "-q")
    assert code == 0, err
    with h5py.File(out / "store.h5") as f, h5py.File(small_store / "store.h5") as g:
        assert f.attrs["config"] == g.attrs["config"]

"""The store read back with plain h5py, as another tool would."""
import json

import h5py
import numpy as np
import pytest

from features.store import Manifest, Store
from features.exceptions import StoreError


def test_plain_h5py_reads_the_documented_layout(small_store):
    with h5py.File(small_store / "store.h5", "r") as f:
        assert f.attrs["format"] == "features-store"
        config = json.loads(f.attrs["config"])
        versions = json.loads(f.attrs["versions"])
        assert config["preset"] == "sift" and config["words"] == 64
        assert {"opencv", "faiss", "h5py", "numpy", "features"} <= set(versions)
        n = int(f.attrs["n_images"])
        assert n == 24
        keys = f["images/key"].asstr()[:]
        assert keys[0] == "astronaut/crop60.jpg" and len(set(keys)) == n
        labels = f["images/label"][:]
        wnids = f["labels/wnid"].asstr()[:]
        assert [wnids[l] for l in labels[::6]] == ["astronaut", "chelsea", "coins", "rocket"]
        assert (f["images/status"][:] == 0).all()
        assert (f["images/width"][:] > 0).all() and (f["images/height"][:] > 0).all()
        offsets = f["offsets"][:]
        assert offsets[0] == 0 and (np.diff(offsets) >= 0).all()
        m = offsets[-1]
        assert f["frames"].shape == (m, 4) and f["frames"].dtype == np.float32
        assert f["descriptors"].shape == (m, 128) and f["descriptors"].dtype == np.uint8
        assert f["words"].shape == (m,)
        words = f["words"][:]
        assert words.min() >= 0 and words.max() < 64
        assert f["codebook/centroids"].shape == (64, 128)
        assert f["codebook"].attrs["words"] == 64

        # per image: frames inside the original image, counts equal to the words histogram
        g = f["encodings/bovw_counts"]
        indptr, indices, data = g["indptr"][:], g["indices"][:], g["data"][:]
        for i in (0, 7, n - 1):
            a, b = offsets[i], offsets[i + 1]
            fr = f["frames"][a:b]
            assert (fr[:, 0] <= f["images/width"][i]).all()
            assert (fr[:, 1] <= f["images/height"][i]).all()
            hist = np.bincount(words[a:b], minlength=64)
            row = np.zeros(64, int)
            row[indices[indptr[i]:indptr[i + 1]]] = data[indptr[i]:indptr[i + 1]]
            np.testing.assert_array_equal(row, hist)

        # tf-idf rows are unit length
        g = f["encodings/bovw"]
        assert g.attrs["weighting"] == "tf-idf" and tuple(g.attrs["shape"]) == (n, 64)
        sq = np.bincount(np.repeat(np.arange(n), np.diff(g["indptr"][:])),
                         weights=g["data"][:].astype(float) ** 2, minlength=n)
        np.testing.assert_allclose(sq, 1.0, rtol=1e-4)
        assert f["failures/key"].shape == (0,)


def test_store_is_movable(small_store, tmp_path):
    import shutil
    moved = tmp_path / "moved"
    shutil.copytree(small_store, moved)
    with Store(small_store) as a, Store(moved) as b:
        np.testing.assert_array_equal(a.h5["frames"][:50], b.h5["frames"][:50])


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a features store"):
        Store(tmp_path)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    with pytest.raises(StoreError, match="not a features store"):
        Store(plain)
    junk = tmp_path / "junk" / "store.h5"
    junk.parent.mkdir()
    junk.write_text("hello")
    with pytest.raises(StoreError, match="not an HDF5 file"):
        Store(junk.parent)


def test_manifest_refuses_another_configuration(tmp_path, small_config):
    m = Manifest(tmp_path)
    m.check_config(small_config)
    m.step_done("sample")
    m.step_done("codebook")
    Manifest(tmp_path).check_config(small_config)
    with pytest.raises(StoreError, match="differs in: words"):
        Manifest(tmp_path).check_config(small_config.replace(words=10))


def test_manifest_of_an_older_recipe_resumes_with_what_it_reads_back_as(tmp_path,
                                                                       small_config):
    """A store written before `relative_contrast` existed: its steps resume with the recipe
    it reads back as (the field off), and the preset's recipe (on) is another one."""
    import json

    from features.presets import Config
    m = Manifest(tmp_path)
    m.check_config(small_config.replace(relative_contrast=False))
    m.step_done("sample")
    m.step_done("codebook")
    del m.data["config"]["relative_contrast"]
    m.save()
    stored = Config.from_json(json.dumps(Manifest(tmp_path).data["config"]))
    assert stored.relative_contrast is False
    Manifest(tmp_path).check_config(stored)
    with pytest.raises(StoreError, match="differs in: relative_contrast"):
        Manifest(tmp_path).check_config(small_config)


def test_manifest_where_nothing_was_built_takes_a_new_configuration(tmp_path, small_config):
    m = Manifest(tmp_path)
    m.check_config(small_config)
    m.step_done("sample")
    # only the codebook size changed: the sample is kept
    Manifest(tmp_path).check_config(small_config.replace(words=10))
    m = Manifest(tmp_path)
    assert m.data["config"]["words"] == 10 and m.is_done("sample")
    # the extraction changed: the sample is dropped
    Manifest(tmp_path).check_config(small_config.replace(words=10, max_side=100))
    m = Manifest(tmp_path)
    assert m.data["config"]["max_side"] == 100 and not m.is_done("sample")


def test_no_temporary_files_left(small_store):
    assert not [p for p in small_store.rglob(".*tmp*")]

"""A rerun over a source that changed: every shard whose images changed is recomputed, and
what the source no longer holds leaves the store. A shard's count and first and last keys
are not enough to call it current."""
import json
import os
import shutil

import numpy as np
import pytest

from features.pipeline import run
from features.pipeline.verify import verify_store
from features.sources import open_source
from features.store import Store


def _run(config, src, out):
    return run(config, open_source(str(src)), out, progress=False)


def _source_keys(src):
    return sorted(str(p.relative_to(src)) for p in src.rglob("*.jpg"))


def _store_rows(out):
    with Store(out) as s:
        return [str(k) for k in s.keys], None


def _row_of(out):
    from features.store.encodings import EncodingRows
    with Store(out) as s:
        rows = EncodingRows(s.h5, "bovw").block(0, s.n_images)
        index = {str(k): i for i, k in enumerate(s.keys)}
    return lambda key: rows[index[key]]


@pytest.fixture
def source(tmp_path, small_set):
    src = tmp_path / "src"
    shutil.copytree(small_set, src)
    return src


def test_an_image_swapped_inside_a_shard_is_seen(tmp_path, source, small_config):
    out = tmp_path / "store"
    _run(small_config, source, out)
    # shard 0 holds astronaut/{crop60,half,jpeg15,original,perspective}: one image goes,
    # another comes between the same first and last keys, so the count stays 5
    (source / "astronaut" / "jpeg15.jpg").unlink()
    shutil.copy(source / "coins" / "original.jpg", source / "astronaut" / "ice.jpg")
    # and an image changes in place (same name, other bytes) in shard 2
    shutil.copy(source / "rocket" / "half.jpg", source / "chelsea" / "perspective.jpg")
    _run(small_config, source, out)
    keys, rows = _store_rows(out)
    assert keys == _source_keys(source)
    assert verify_store(out)["sound"]

    # the images now in those places were encoded from their new bytes: each has the row
    # of the image whose bytes it took
    row = _row_of(out)
    np.testing.assert_array_equal(row("astronaut/ice.jpg"), row("coins/original.jpg"))
    np.testing.assert_array_equal(row("chelsea/perspective.jpg"), row("rocket/half.jpg"))


def test_a_shrunk_source_leaves_no_stale_shard(tmp_path, source, small_config):
    out = tmp_path / "store"
    _run(small_config, source, out)                   # 24 images: 5 shards of 5
    assert len(list((out / "shards").iterdir())) == 5
    shutil.rmtree(source / "rocket")                  # 18 images: 4 shards
    _run(small_config, source, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["shards"], key=int) == ["0", "1", "2", "3"]
    assert sorted(os.listdir(out / "shards")) == sorted(
        r["file"] for r in manifest["shards"].values())
    result = verify_store(out)
    assert result["sound"] and result["checked"]["shards"] == 4
    assert result["checked"]["images"] == 18
    assert _store_rows(out)[0] == _source_keys(source)


def test_an_image_relabelled_is_recomputed(tmp_path, source, small_config):
    """Moving an image to another class folder changes its key; renaming a class folder
    changes every label of the shards it touches."""
    out = tmp_path / "store"
    _run(small_config, source, out)
    source.joinpath("coins").rename(source / "aardvark")   # sorts first: every label moves
    _run(small_config, source, out)
    with Store(out) as s:
        labels = s.column("label")
        classes = s.classes
    assert classes[0] == "aardvark" and verify_store(out)["sound"]
    keys = _store_rows(out)[0]
    assert keys == _source_keys(source)
    assert [classes[label] for label in labels] == [k.split("/")[0] for k in keys]

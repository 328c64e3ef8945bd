"""A Store reads one generation: the files it opened, never a file renamed over them since."""
from __future__ import annotations

import os
import shutil

import pytest

from features.exceptions import StoreError
from features.store import Store


def _replace_with_copy(path, source=None):
    """Rename a copy over ``path`` (as a rerun does): a new file at the same path."""
    tmp = path.with_name(path.name + ".new")
    shutil.copyfile(source or path, tmp)
    os.replace(tmp, path)


@pytest.fixture
def store_copy(small_store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(small_store, out)
    return out


@pytest.mark.parametrize("kept", [256, 0])
def test_a_shard_replaced_after_opening_is_refused_not_read(store_copy, kept, monkeypatch):
    # kept=0: a store of more shards than it keeps open checks each one at each read
    monkeypatch.setattr("features.store.reader._KEPT_SHARDS", kept)
    with Store(store_copy) as store:
        keep = store.image_features(0)             # shard 0 opened before the rerun
        name = store.shard_records[-1]["file"]
        last = store.n_images - 1
        _replace_with_copy(store_copy / "shards" / name)
        # the shard opened before keeps answering from its own file
        assert len(store.image_features(0)["words"]) == len(keep["words"])
        with pytest.raises(StoreError, match="was replaced after"):
            store.image_features(last)
        if store.has_geometry:
            assert len(store.geometry([0])[0]) > 0
            with pytest.raises(StoreError, match="was replaced after"):
                store.geometry([last])
    with Store(store_copy) as again:               # a store opened afterwards reads it
        assert len(again.image_features(last)["words"]) > 0
        if again.has_geometry:
            records, offsets = again.geometry([last])
            assert offsets[-1] == len(records) > 0


def test_the_key_table_reads_the_file_opened_not_the_path(store_copy, tmp_path):
    with Store(store_copy) as store:
        keys = list(store.keys)               # read through HDF5, the table not used yet
        # another file renamed over store.h5: its bytes at the table's offsets are others
        other = tmp_path / "other.h5"
        other.write_bytes(b"\x7f" * (store_copy / "store.h5").stat().st_size)
        _replace_with_copy(store_copy / "store.h5", other)
        # the first use of the key table comes after the rename: it maps the opened file
        assert [store.key_of(i) for i in range(store.n_images)] == keys
        assert all(store.index_of(k) == i for i, k in enumerate(keys))

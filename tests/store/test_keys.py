import os
import unicodedata

import h5py
import numpy as np
import pytest

from features.store import keys as kt
from features.store import Store

KEYS = [
    "n01440764/n01440764_10026.JPEG",
    "caf\u00e9/cr\u00e8me.jpg",                                   # NFC
    unicodedata.normalize("NFD", "caf\u00e9/cr\u00e8me.jpg"),     # same text, other bytes
    "\u732b/\u5199\u771f 1.png",
    "emoji/\U0001F600.jpg",
    os.fsdecode(b"latin1/\xe9t\xe9.jpg"),   # file-system bytes that are not UTF-8
    os.fsdecode(b"\xff\xfe/raw.jpg"),
    "tab\tand\nnewline.jpg",
    "",
    "a" * 3000,
    "n01440764/n01440764_1002.JPEG",        # a prefix of another key
]


def _table(tmp_path, keys, hashes=None):
    w = kt.KeyTableWriter(len(keys))
    w.add(keys[: len(keys) // 2])
    w.add(keys[len(keys) // 2:])
    if hashes is not None:
        w.hashes[:] = hashes
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        w.write(f)
    f = h5py.File(path, "r")
    return kt.KeyTable(f, path), f


def test_present_keys_give_their_row_and_back(tmp_path):
    table, f = _table(tmp_path, KEYS)
    assert isinstance(table.hash, np.memmap) and isinstance(table.blob, np.memmap)
    for i, key in enumerate(KEYS):
        assert table.row_of(key) == i, key
        assert table.key_of(i) == key
    assert np.all(np.diff(table.hash.astype(np.float64)) >= 0)


@pytest.mark.parametrize("absent", [
    "n01440764/n01440764_1002.jpeg", "n01440764/n01440764_100", "caf\u00e9", " ",
    os.fsdecode(b"latin1/\xe9t\xe8.jpg"), "\udcff", "emoji/\U0001F601.jpg", "a" * 2999,
])
def test_absent_keys_give_none(tmp_path, absent):
    table, _ = _table(tmp_path, KEYS)
    assert table.row_of(absent) is None


def test_hash_collisions_are_resolved_by_the_key_bytes(tmp_path):
    hashes = np.array([7, 7, 7, 3, 3, 9, 1, 7, 3, 2, 5], np.uint64)  # forced collisions
    table, _ = _table(tmp_path, KEYS, hashes)
    # the lookups must hash to these values: patch the hash of the lookup side the same way
    forced = dict(zip(KEYS, hashes.tolist()))
    real = kt.hashlib.blake2b

    class Fake:
        def __init__(self, raw, digest_size):
            self.raw = raw

        def digest(self):
            key = self.raw.decode("utf-8", "surrogateescape")
            return int(forced.get(key, 8)).to_bytes(8, "little")

    kt.hashlib.blake2b = Fake
    try:
        for i, key in enumerate(KEYS):
            assert table.row_of(key) == i, key
        assert table.row_of("other") is None   # hash 8: between stored hashes
    finally:
        kt.hashlib.blake2b = real


def test_empty_table(tmp_path):
    table, _ = _table(tmp_path, [])
    assert len(table) == 0 and table.row_of("x") is None


def test_store_lookup_uses_the_key_index_not_the_keys(small_store, monkeypatch):
    with Store(small_store) as s:
        keys = list(s.h5["images/key"].asstr()[:])
        monkeypatch.setattr(Store, "keys", property(lambda self: pytest.fail("all keys read")))
        assert s.key_table is not None
        for i, key in enumerate(keys):
            assert s.index_of(key) == i and s.key_of(i) == key
        assert s.index_of("no/such.jpg") is None


def test_store_without_key_index_still_answers(small_store, tmp_path):
    import shutil
    copy = tmp_path / "old"
    shutil.copytree(small_store, copy)
    with h5py.File(copy / "store.h5", "r+") as f:
        del f[kt.GROUP]
        key = f["images/key"].asstr()[3]
    with Store(copy) as s:
        assert s.key_table is None
        assert s.index_of(key) == 3 and s.key_of(3) == key and s.index_of("x") is None

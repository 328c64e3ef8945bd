"""Damaged index files: flipped bits and truncations of ``index.faiss`` and ``index.refine``
are refused with one line by ``load_index`` (so by every search) and reported by
``verify``, never a traceback, a crash or a wrong score; a build killed between its files
leaves the previous index whole; stores made before generations still load."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import clustered_rows, run_cli, write_store

from features import index as ix
from features.exceptions import IndexDamaged, StoreError
from features.index import INDEX_FILE, REFINE_FILE, files
from features.index.verify import check_index
from features.store import Manifest, Store

pytestmark = pytest.mark.usefixtures("faiss_one_thread")

FACTORIES = ["Flat", "IVF8,PQ8,Refine(Sparse)"]


def _rows(n=600, dim=32):
    x = clustered_rows(n, dim=dim, seed=1)
    x[x < 0.12] = 0                                # sparse, as tf-idf rows
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """{factory: store folder} with an index of each kind (files well under HASH_AT_OPEN)."""
    x = _rows()
    out = {}
    for factory in FACTORIES:
        store = write_store(tmp_path_factory.mktemp("fuzz") / "s", x)
        with Store(store) as s:
            ix.build(s, factory=factory)
        out[factory] = store
    return out


def _damage(store) -> list[dict]:
    """What the index half of ``features verify`` finds (the minimal stores written here
    lack tables of the store half)."""
    found = []
    check_index(store, None, lambda path, problem: found.append(
        {"path": str(path), "problem": problem}), {})
    return found


def _search(store, q):
    with Store(store) as s:
        return ix.search_vectors(ix.load_index(s), q, 5)


def _mutations(raw, n, seed):
    """``n`` damaged copies of ``raw``: single bit flips (half of them in the first 256
    bytes, where the headers are) and truncations."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        data = bytearray(raw)
        if i % 4 == 3:
            yield "truncated", bytes(data[:int(rng.integers(0, len(data)))])
            continue
        at = int(rng.integers(0, min(256, len(data)) if i % 2 else len(data)))
        data[at] ^= 1 << int(rng.integers(8))
        yield f"bit flipped at {at}", bytes(data)


def _one_line(e, path):
    text = str(e)
    assert len(text.splitlines()) == 1 and str(path) in text, text


@pytest.mark.parametrize("factory", FACTORIES)
def test_every_damaged_byte_is_refused_at_open_and_by_verify(stores, factory):
    store = stores[factory]
    q = _rows(20)[:20]
    good = _search(store, q)
    for name, path in ix.current_index_paths(store).items():
        raw = path.read_bytes()
        try:
            for what, data in _mutations(raw, 24, seed=len(raw)):
                path.write_bytes(data)
                with pytest.raises(IndexDamaged) as e:
                    _search(store, q)
                _one_line(e.value, path)
                damage = _damage(store)
                assert any(d["path"] == str(path) for d in damage), (what, damage)
        finally:
            path.write_bytes(raw)
    got = _search(store, q)
    np.testing.assert_array_equal(got[1], good[1])
    assert not _damage(store)


def test_large_refine_file_is_checked_for_structure_at_open(stores, monkeypatch):
    """index.refine above HASH_AT_OPEN is not hashed at open: a truncation or a damaged
    header is still refused there, anything else never read out of bounds, and verify
    (which hashes every file) reports it."""
    store = stores["IVF8,PQ8,Refine(Sparse)"]
    monkeypatch.setitem(files.HASH_AT_OPEN, REFINE_FILE, 0)
    path = ix.current_index_paths(store)[REFINE_FILE]
    raw = path.read_bytes()
    q = _rows(20)[:20]
    try:
        for what, data in _mutations(raw, 48, seed=7):
            path.write_bytes(data)
            # the header's fields (the rest of its 64 bytes is padding, never read)
            header = what == "truncated" or int(what.rsplit(" ", 1)[1]) < 32
            try:
                scores, _ = _search(store, q)
            except StoreError as e:
                _one_line(e, path)
            else:
                assert not header, what
                assert np.isfinite(scores).any()
            assert _damage(store), what
    finally:
        path.write_bytes(raw)


def test_the_cases_of_the_issue(stores):
    """A flipped exponent bit of a refine value scored 979.9; a flipped bit of an exact
    index's dimension ended in an AssertionError: both are refused with one line."""
    store = stores["IVF8,PQ8,Refine(Sparse)"]
    path = ix.current_index_paths(store)[REFINE_FILE]
    raw = path.read_bytes()
    data = bytearray(raw)
    data[-1] ^= 0x40                       # the last value's top exponent bit
    path.write_bytes(bytes(data))
    try:
        with pytest.raises(IndexDamaged, match="checksum"):
            _search(store, _rows(3))
    finally:
        path.write_bytes(raw)
    store = stores["Flat"]
    path = ix.current_index_paths(store)[INDEX_FILE]
    raw = path.read_bytes()
    data = bytearray(raw)
    data[4] ^= 0x01                        # the dimension, after the fourcc
    path.write_bytes(bytes(data))
    try:
        with pytest.raises(IndexDamaged, match="checksum"):
            _search(store, _rows(3))
        # verify names the file, and so does the command line, in one line
        damage = _damage(store)
        assert [d["path"] for d in damage] == [str(path)]
    finally:
        path.write_bytes(raw)


def test_a_build_killed_before_its_switch_leaves_the_previous_index(tmp_path, cli_env):
    """Killed after writing a new generation's files, before the manifest names them: the
    previous pair is what loads, verify is sound, the next build removes the leftover."""
    x = _rows()
    store = write_store(tmp_path / "s", x)
    with Store(store) as s:
        ix.build(s, factory="IVF8,PQ8,Refine(Sparse)")
    q = x[:20]
    before, record = _search(store, q), ix.index_record(store)
    script = textwrap.dedent(f"""
        import os, signal
        from features import index as ix
        from features.index import builder
        from features.store import Store
        def killed(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        builder._record = killed
        with Store({str(store)!r}) as s:
            ix.build(s, factory="IVF4,Flat,Refine(Sparse)", seed=3)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=cli_env, capture_output=True)
    assert proc.returncode == -9, proc.stderr
    generations = sorted(p.name for p in store.glob("index-*"))
    assert len(generations) == 2 and record["generation"] in generations
    assert ix.index_record(store) == record
    after = _search(store, q)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    assert not _damage(store)
    run_cli("index", store, "--index", "IVF4,Flat,Refine(Sparse)", env=cli_env, check=True)
    new = ix.index_record(store)["generation"]
    assert [p.name for p in store.glob("index-*")] == [new] and new not in generations


def _as_before_generations(store):
    """The store's index moved to the layout of versions before generations: its files in
    the store's folder, a record without generation or checksums."""
    manifest = Manifest(store)
    record = manifest.data["steps"]["index"]
    folder = store / record.pop("generation")
    record.pop("files")
    for path in folder.iterdir():
        os.replace(path, store / path.name)
    folder.rmdir()
    manifest.save()


def test_a_store_made_before_generations_still_loads(tmp_path, cli_env):
    x = _rows()
    store = write_store(tmp_path / "s", x)
    factory = "IVF8,PQ8,Refine(Sparse)"
    with Store(store) as s:
        ix.build(s, factory=factory)
    q = x[:20]
    before = _search(store, q)
    _as_before_generations(store)
    assert (store / INDEX_FILE).exists() and (store / REFINE_FILE).exists()
    after = _search(store, q)
    np.testing.assert_array_equal(after[1], before[1])
    assert not _damage(store)
    proc = run_cli("search", store, "c1/img_000001.jpg", "-k", "3", env=cli_env, check=True)
    assert "img_" in proc.stdout
    with Store(store) as s:
        assert ix.is_current(s, factory=factory)        # kept as it is
        ix.build(s, factory=factory)
    assert (store / INDEX_FILE).exists()
    # still checked for size: a truncated old file is one line
    raw = (store / REFINE_FILE).read_bytes()
    (store / REFINE_FILE).write_bytes(raw[:-10])
    with pytest.raises(IndexDamaged) as e:
        _search(store, q)
    _one_line(e.value, store / REFINE_FILE)
    # a rebuild moves it to a generation and removes the old files
    with Store(store) as s:
        ix.build(s, factory=factory)
    assert not (store / INDEX_FILE).exists() and not (store / REFINE_FILE).exists()
    assert ix.index_record(store)["generation"]
    np.testing.assert_array_equal(_search(store, q)[1], before[1])


def test_a_hostile_generation_name_is_refused(stores, tmp_path):
    store = tmp_path / "s"
    shutil.copytree(stores["Flat"], store)
    manifest = Manifest(store)
    manifest.data["steps"]["index"]["generation"] = "../../etc"
    manifest.save()
    with pytest.raises(StoreError, match="generation") as e:
        _search(store, _rows(3))
    assert len(str(e.value).splitlines()) == 1
    damage = _damage(store)
    assert any("generation" in d["problem"] for d in damage), damage
    with Store(store) as s:
        assert not ix.is_current(s, factory="Flat")
        ix.build(s, factory="Flat")
    assert not _damage(store)

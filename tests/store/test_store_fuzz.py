"""Hostile stores: HDF5 files that would make a reader open files outside the store
(external storage of a dataset, external links, virtual datasets mapping files elsewhere)
are refused by every reader with one line, and `verify` calls them damaged."""
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_cli

ARGS = ["--words", 16, "--max-side", 200, "--shard-size", 6, "-q"]
SECRET = b"secret-outside-the-store"


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_set):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = tmp_path_factory.mktemp("built") / "store"
    run_cli("run", small_set, "-o", out, *ARGS, env=env, check=True)
    return out


@pytest.fixture
def store(built, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(built, out)
    with h5py.File(tmp_path / "outside.h5", "w") as f:
        f["name"] = np.array([SECRET] * 4)
    (tmp_path / "outside.bin").write_bytes(SECRET * 100)
    return out


def _replace(f, name, make):
    """Replace the dataset ``name`` of the open file ``f`` by ``make(group, leaf)``."""
    group, _, leaf = name.rpartition("/")
    g = f[group] if group else f
    del g[leaf]
    make(g, leaf)


def _resign_shard(store, number):
    """Record a changed shard's new size and checksum where the store keeps them, so that
    only what the shard holds, not its record, gives it away."""
    from features._shared.hashing import file_sha256
    path = store / "shards" / f"shard-{number:06d}.h5"
    size, checksum = path.stat().st_size, file_sha256(path)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["shards"][str(number)].update(size=size, checksum=checksum)
    (store / "manifest.json").write_text(json.dumps(manifest))
    with h5py.File(store / "store.h5", "r+") as f:
        records = json.loads(f.attrs["shards"])
        records[number].update(size=size, checksum=checksum)
        f.attrs["shards"] = json.dumps(records)


def external_storage(store):
    with h5py.File(store / "store.h5", "r+") as f:
        _replace(f, "labels/name", lambda g, n: g.create_dataset(
            n, shape=(4,), dtype="S40", external=[("/etc/passwd", 0, h5py.h5f.UNLIMITED)]))


def external_storage_relative(store):
    """A relative name: HDF5 looks for it from the working directory, not the store."""
    with h5py.File(store / "store.h5", "r+") as f:
        _replace(f, "labels/name", lambda g, n: g.create_dataset(
            n, shape=(4,), dtype="S24", external=[("../outside.bin", 0, h5py.h5f.UNLIMITED)]))


def external_link(store):
    with h5py.File(store / "store.h5", "r+") as f:
        _replace(f, "labels/name", lambda g, n: g.__setitem__(
            n, h5py.ExternalLink(str(store.parent / "outside.h5"), "name")))


def external_link_group(store):
    with h5py.File(store / "store.h5", "r+") as f:
        f["elsewhere"] = h5py.ExternalLink(str(store.parent / "outside.h5"), "/")


def _virtual(g, n, source):
    layout = h5py.VirtualLayout(shape=(4,), dtype="S24")
    layout[:] = h5py.VirtualSource(source, "name", shape=(4,))
    g.create_virtual_dataset(n, layout)


def virtual_outside(store):
    with h5py.File(store / "store.h5", "r+") as f:
        _replace(f, "labels/name", lambda g, n: _virtual(g, n, "../outside.h5"))


def virtual_absolute(store):
    with h5py.File(store / "store.h5", "r+") as f:
        _replace(f, "labels/name", lambda g, n: _virtual(g, n, str(store.parent / "outside.h5")))


def virtual_climbing(store):
    """Inside at first sight: shards/../../outside.h5."""
    with h5py.File(store / "store.h5", "r+") as f:
        _replace(f, "labels/name", lambda g, n: _virtual(g, n, "shards/../../outside.h5"))


def shard_external_storage(store):
    """store.h5 is clean; a shard it maps keeps its words in /etc/passwd."""
    with h5py.File(store / "shards" / "shard-000000.h5", "r+") as f:
        words = f["words"]
        shape, dtype = words.shape, words.dtype
        _replace(f, "words", lambda g, n: g.create_dataset(
            n, shape=shape, dtype=dtype, external=[("/etc/passwd", 0, h5py.h5f.UNLIMITED)]))
    _resign_shard(store, 0)


def shard_external_link(store):
    with h5py.File(store / "shards" / "shard-000001.h5", "r+") as f:
        _replace(f, "frames", lambda g, n: g.__setitem__(
            n, h5py.ExternalLink(str(store.parent / "outside.h5"), "name")))
    _resign_shard(store, 1)


HOSTILE = [external_storage, external_storage_relative, external_link, external_link_group,
           virtual_outside, virtual_absolute, virtual_climbing, shard_external_storage,
           shard_external_link]


def _one_line(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error:"), proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    assert SECRET.decode() not in proc.stdout + proc.stderr and "root:" not in proc.stdout


@pytest.mark.parametrize("make", HOSTILE, ids=[m.__name__ for m in HOSTILE])
def test_every_reader_refuses_a_store_reading_outside(store, make, monkeypatch):
    from features.exceptions import StoreError
    from features.pipeline.verify import verify_store
    from features.search import Searcher
    from features.store import Store
    make(store)
    monkeypatch.chdir(store / "shards")      # where a relative external name would resolve
    for reader in (lambda: Store(store), lambda: Store(store / "store.h5", check_shards=False),
                   lambda: Searcher(store)):
        with pytest.raises(StoreError, match="reads only its own files, so it is refused"):
            reader()
    result = verify_store(store)
    assert not result["sound"]
    assert any("reads only its own files" in d["problem"] for d in result["damage"]), result


@pytest.mark.parametrize("make", [external_storage, shard_external_storage],
                         ids=["store.h5", "shard"])
def test_commands_refuse_it_with_one_line(store, make, cli_env):
    make(store)
    line = "keeps its data in external files (/etc/passwd)"
    _one_line(run_cli("search", store, "coins/half.jpg", "--rerank", env=cli_env), line)
    _one_line(run_cli("info", store, env=cli_env), line)
    _one_line(run_cli("serve", store, "--port", 0, env=cli_env), line)
    proc = run_cli("verify", store, env=cli_env)
    assert proc.returncode == 1 and line in proc.stdout and "root:" not in proc.stdout


def test_the_shard_reader_checks_what_it_opens(store):
    """A shard opened by the store's own reader (re-ranking reads frames and words from the
    shards), also one that store.h5 does not map, is checked too."""
    from features.exceptions import StoreError
    from features.store import Store
    with h5py.File(store / "shards" / "shard-000002.h5", "r+") as f:
        f["images/leak"] = h5py.ExternalLink(str(store.parent / "outside.h5"), "name")
    _resign_shard(store, 2)
    with Store(store) as s:                          # store.h5 maps frames, not images/
        s.image_features(0)
        with pytest.raises(StoreError, match="external link"):
            s.image_features(13)


def test_virtual_datasets_inside_the_store_stay_readable(store, tmp_path):
    """The store's own virtual datasets (shards by relative path), a mapping of the file
    itself, and a shards folder that is a symbolic link elsewhere are all fine."""
    from features.pipeline.verify import verify_store
    from features.search import Searcher
    from features.store import Store
    with h5py.File(store / "store.h5", "r+") as f:
        f["copy_of_offsets"] = f["offsets"][:]
        layout = h5py.VirtualLayout(shape=f["offsets"].shape, dtype=f["offsets"].dtype)
        layout[:] = h5py.VirtualSource(".", "copy_of_offsets", shape=f["offsets"].shape)
        f.create_virtual_dataset("self_mapped", layout)
    elsewhere = tmp_path / "other-disk"
    shutil.move(store / "shards", elsewhere)
    (store / "shards").symlink_to(elsewhere)
    with Store(store) as s:
        assert (s.h5["self_mapped"][:] == s.h5["offsets"][:]).all()
        assert len(s.h5["frames"][:]) == s.h5["offsets"][-1]
        assert len(s.image_features(20)["words"])
    with Searcher(store) as searcher:
        assert searcher.search(searcher.query("coins/half.jpg"), k=3, rerank=True)
    assert verify_store(store)["sound"]


def test_a_checked_file_is_checked_again_once_it_changes(store):
    """The check is remembered per file while it is unchanged, never past a change."""
    from features.exceptions import StoreError
    from features.store import Store
    Store(store).close()
    Store(store).close()
    shard_external_storage(store)
    with pytest.raises(StoreError, match="external files"):
        Store(store)

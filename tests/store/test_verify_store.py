"""A store that never lies: damaged, missing or changed files are found, refused with one
line naming the repair, and recomputed by a rerun."""
import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import package_env, run_cli

ARGS = ["--words", 32, "--max-side", 200, "--shard-size", 5, "-q"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_set):
    """A finished store, built by the real command; tests damage copies of it."""
    env = package_env()
    out = tmp_path_factory.mktemp("built") / "store"
    run_cli("run", small_set, "-o", out, *ARGS, env=env, check=True)
    return out


@pytest.fixture
def store(built, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(built, out)
    return out


def _one_line(proc, *fragments, code=2):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Segmentation" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error:"), proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def _assert_same_store(a, b):
    da, db = _datasets(a / "store.h5"), _datasets(b / "store.h5")
    assert da.keys() == db.keys()
    for name in da:
        np.testing.assert_array_equal(da[name], db[name], err_msg=name)


def _verify(store, env=None):
    """verify in this process (the command is run by test_verify_a_sound_store and where
    its exit status matters)."""
    from features.pipeline.verify import verify_store
    result = verify_store(store)
    return (0 if result["sound"] else 1), result


def test_verify_a_sound_store(built, cli_env):
    proc = run_cli("verify", built, "--json", env=cli_env)
    code, result = proc.returncode, json.loads(proc.stdout)
    assert code == 0 and result["sound"] and result["damage"] == []
    assert result["checked"]["shards"] == 5 and result["checked"]["images"] == 24
    assert result["checked"]["index_vectors"] == 24
    proc = run_cli("verify", built, env=cli_env)
    assert proc.returncode == 0 and "sound" in proc.stdout


@pytest.mark.parametrize("damage", ["truncated", "overwritten", "deleted", "same-size"])
def test_damaged_shard_is_refused_then_recomputed(store, built, small_set, cli_env, damage):
    shard = store / "shards" / "shard-000002.h5"
    data = shard.read_bytes()
    if damage == "truncated":
        shard.write_bytes(data[:len(data) // 2])
    elif damage == "overwritten":
        shard.write_bytes(b"not a shard any more")
    elif damage == "deleted":
        shard.unlink()
    else:   # same size, flipped bytes in the middle of the data
        mid = len(data) // 2
        shard.write_bytes(data[:mid] + bytes(255 - b for b in data[mid:mid + 4096])
                          + data[mid + 4096:])

    code, result = _verify(store, cli_env)
    assert code == 1 and not result["sound"]
    assert any(d["path"].endswith("shard-000002.h5") for d in result["damage"]), result
    assert "features encode" in result["repair"]
    if damage == "truncated":
        text = run_cli("verify", store, env=cli_env)
        assert text.returncode == 1 and "shard-000002.h5" in text.stdout

    with h5py.File(built / "store.h5", "r") as f:
        in_shard_2 = f["images/key"].asstr()[12]          # 5 images per shard
    if damage != "same-size":
        # found when the store is opened: no reader gets anything from it
        _one_line(run_cli("info", store, env=cli_env), "shard-000002.h5", "features encode")
        _one_line(run_cli("search", store, "coins/half.jpg", env=cli_env), "shard-000002.h5")
    # reading the damaged shard itself: one line, never zeros
    proc = run_cli("search", store, in_shard_2, "--rerank", "--json", env=cli_env)
    if damage == "same-size" and proc.returncode == 0:
        # the flipped bytes may fall in data HDF5 does not checksum: the scores then come
        # from the intact encodings, and verify (above) is what finds the damage
        pass
    else:
        _one_line(proc, "shard")

    if damage in ("overwritten", "same-size"):
        return    # the repair is the same for every damage: shown on the two others
    # the repair the message names: rerun the job; it recomputes the shard
    run_cli("encode", small_set, "-o", store, "-q", env=cli_env, check=True)
    run_cli("index", store, env=cli_env, check=True)
    code, result = _verify(store, cli_env)
    assert code == 0, result
    _assert_same_store(built, store)


def test_rerun_of_run_recomputes_a_deleted_shard(store, built, small_set, cli_env):
    (store / "shards" / "shard-000004.h5").unlink()
    run_cli("run", small_set, "-o", store, *ARGS, env=cli_env, check=True)
    assert _verify(store, cli_env)[0] == 0
    _assert_same_store(built, store)


def _index_file(store):
    from features.index import INDEX_FILE, current_index_paths
    return current_index_paths(store)[INDEX_FILE]


def test_corrupt_index_is_refused(store, cli_env):
    _index_file(store).write_bytes(b"\x00" * 100)
    _one_line(run_cli("search", store, "coins/half.jpg", env=cli_env), "index.faiss",
              "features index")
    _one_line(run_cli("info", store, env=cli_env), "index.faiss")
    code, result = _verify(store, cli_env)
    assert code == 1 and result["damage"][0]["path"].endswith("index.faiss")
    run_cli("index", store, env=cli_env, check=True)
    assert _verify(store, cli_env)[0] == 0


def test_index_of_another_size_is_damage(store, built, cli_env, tmp_path):
    import faiss
    from features.index import files
    from features.store import Manifest
    path = _index_file(store)
    index = faiss.read_index(str(path))
    index.remove_ids(np.array([3], np.int64))
    faiss.write_index(index, str(path))
    code, result = _verify(store, cli_env)
    assert code == 1 and "the manifest records" in result["damage"][0]["problem"]
    # recorded as it is now: the count is still wrong
    manifest = Manifest(store)
    manifest.data["steps"]["index"]["files"] = files.describe_files({"index.faiss": path})
    manifest.save()
    code, result = _verify(store, cli_env)
    assert code == 1 and "23 vectors" in result["damage"][0]["problem"]


def test_damaged_interior_of_store_h5(store, cli_env):
    path = store / "store.h5"
    data = bytearray(path.read_bytes())
    # zero the middle third: chunk data and b-tree nodes of the image tables
    a, b = len(data) // 3, 2 * len(data) // 3
    data[a:b] = bytes(b - a)
    path.write_bytes(bytes(data))
    code, result = _verify(store, cli_env)
    assert code == 1 and any(d["path"].endswith("store.h5") for d in result["damage"])
    for proc in (run_cli("info", store, env=cli_env),
                 run_cli("search", store, "coins/half.jpg", "--rerank", env=cli_env)):
        if proc.returncode != 0:
            _one_line(proc)


def test_store_h5_missing_or_not_hdf5(store, cli_env):
    (store / "store.h5").write_bytes(b"garbage")
    _one_line(run_cli("info", store, env=cli_env), "not an HDF5 file")
    assert _verify(store, cli_env)[0] == 1


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"format": "features-store", '
                                     '"config": null, "steps": [], "shards": {}}',
                                     '{"format": "features-store", "config": null, "steps": {}, '
                                     '"shards": {"0": {"file": 3}}}'])
def test_bad_manifest_says_what_to_do(store, small_set, cli_env, content):
    from features.store import Manifest
    from features.exceptions import StoreError
    (store / "manifest.json").write_text(content)
    with pytest.raises(StoreError, match="manifest.json.*delete it.*rerun the same command"):
        Manifest(store)
    assert _verify(store)[0] == 1
    if content != "{not json":
        return
    line = _one_line(run_cli("run", small_set, "-o", store, *ARGS, env=cli_env),
                     "manifest.json", "rerun the same command")
    assert "delete it" in line
    (store / "manifest.json").unlink()                 # what the message says
    run_cli("run", small_set, "-o", store, *ARGS, env=cli_env, check=True)
    assert _verify(store)[0] == 0


def test_first_run_that_failed_on_a_bad_option_does_not_lock_the_store(tmp_path, small_set,
                                                                       cli_env):
    out = tmp_path / "store"
    small = ["--max-side", 120, "--sample-images", 6, "-q"]
    proc = run_cli("run", small_set, "-o", out, "--words", 100000, *small, env=cli_env)
    _one_line(proc, "codebook")
    proc = run_cli("run", small_set, "-o", out, "--words", 8, *small, env=cli_env)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out / "store.h5", "r") as f:
        assert f["codebook/centroids"].shape == (8, 128)


def test_verify_of_a_job_stopped_before_store_h5_is_not_sound(tmp_path, small_set, cli_env):
    """A job killed before its merge has no store.h5: verify must not call it sound (search
    refuses it as no store), it says the job is unfinished."""
    out = tmp_path / "store"
    run_cli("extract", small_set, "-o", out, *ARGS, env=cli_env, check=True)
    run_cli("codebook", out, env=cli_env, check=True)
    line = _one_line(run_cli("verify", out, env=cli_env), "not a finished store",
                     "steps done: sample, codebook", "rerun")
    assert "sound" not in line
    _one_line(run_cli("search", out, "coins/half.jpg", env=cli_env))



@pytest.mark.parametrize("blocks", [(5, 7), (1 << 16, 1 << 20)])
def test_verify_reads_in_blocks_with_the_same_findings(store, monkeypatch, blocks):
    """Blocks smaller than the store (5 images, 7 values: rows cross their edges) find what
    one read of everything finds: the images to index, a count that differs, offsets that
    decrease."""
    from features.store import verify
    monkeypatch.setattr(verify, "BLOCK_IMAGES", blocks[0])
    monkeypatch.setattr(verify, "BLOCK_VALUES", blocks[1])
    path = store / "store.h5"
    with h5py.File(path, "r") as f:
        status, offsets = f["images/status"][:], f["offsets"][:]
        indptr = f["encodings/bovw_counts/indptr"][:]
    expected = np.flatnonzero((status == 0) & (np.diff(offsets) > 0))
    assert len(expected) == 24
    bad = verify.Damage()
    assert np.array_equal(verify.check_store(store, bad), expected) and bad.found == []

    with h5py.File(path, "r+") as f:      # images 13 and 21 count one word more
        for image in (13, 21):
            f["encodings/bovw_counts/data"][indptr[image + 1] - 1] += 1
    bad = verify.Damage()
    verify.check_store(store, bad)
    assert [d["problem"] for d in bad.found] == [
        "word counts differ from offsets for 2 images (first: image 13)"]

    with h5py.File(path, "r+") as f:      # a decrease in a later block
        f["offsets"][17] = f["offsets"][16] - 1
    bad = verify.Damage()
    assert verify.check_store(store, bad) is None
    assert [d["problem"] for d in bad.found] == [
        "offsets are not 0, non-decreasing, one per image + 1"]

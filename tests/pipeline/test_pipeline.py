import shutil

import h5py
import numpy as np
import pytest

from features.pipeline import encode_images, run
from features.sources import open_source
from features.store import Store
from features.exceptions import StoreError


def _contents(store_dir):
    with h5py.File(store_dir / "store.h5", "r") as f:
        return {name: f[name][:] for name in
                ("images/key", "images/label", "images/status", "offsets", "frames", "words",
                 "encodings/bovw/indptr", "encodings/bovw/indices", "encodings/bovw/data",
                 "codebook/centroids")}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_same_result_with_two_workers(tmp_path, small_set, small_config, small_store):
    out = tmp_path / "two"
    run(small_config, open_source(str(small_set)), out, jobs=2, progress=False)
    _assert_same(_contents(small_store), _contents(out))


def test_resume_rewrites_only_missing_shards(tmp_path, small_set, small_config, small_store):
    out = tmp_path / "resumed"
    shutil.copytree(small_store, out)
    (out / "store.h5").unlink()
    (out / "shards" / "shard-000002.h5").unlink()
    kept = (out / "shards" / "shard-000000.h5").stat().st_mtime_ns
    run(small_config, open_source(str(small_set)), out, progress=False)
    assert (out / "shards" / "shard-000000.h5").stat().st_mtime_ns == kept
    _assert_same(_contents(small_store), _contents(out))


def test_other_config_in_same_store_is_refused(small_set, small_config, small_store):
    with pytest.raises(StoreError, match="another configuration"):
        run(small_config.replace(words=32), open_source(str(small_set)), small_store,
            progress=False)


def test_bad_files_become_failed_items(tmp_path, small_set, small_config):
    src = tmp_path / "src"
    shutil.copytree(small_set, src)
    (src / "chelsea" / "notes.jpg").write_text("this is not an image")
    (src / "coins" / "empty.png").write_bytes(b"")
    good = (src / "rocket" / "original.jpg").read_bytes()
    (src / "rocket" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    summary = run(small_config, open_source(str(src)), tmp_path / "out", progress=False)
    assert summary.images == 27
    with Store(tmp_path / "out") as s:
        failures = {key: reason for _, key, reason in s.failures()}
        status = dict(zip(s.keys, s.column("status")))
    assert "chelsea/notes.jpg" in failures and "coins/empty.png" in failures
    assert all(reason for reason in failures.values())
    assert status["chelsea/notes.jpg"] != 0 and status["rocket/original.jpg"] == 0
    assert summary.failed == len(failures) >= 2
    report = (tmp_path / "out" / "failures.tsv").read_text().splitlines()
    assert report[0] == "index\tkey\treason" and len(report) == 1 + len(failures)


def test_limit(tmp_path, small_set, small_config):
    summary = run(small_config.replace(sample_images=10, words=16), open_source(str(small_set)),
                  tmp_path / "lim", limit=8, progress=False)
    assert summary.images == 8


def test_resume_with_another_limit_is_refused(tmp_path, small_set, small_config):
    config = small_config.replace(sample_images=10, words=16)
    run(config, open_source(str(small_set)), tmp_path / "s", limit=8, progress=False)
    with pytest.raises(StoreError, match="--limit 8"):
        run(config, open_source(str(small_set)), tmp_path / "s", limit=20, progress=False)


def test_changed_source_recomputes_stale_shards(tmp_path, small_set, small_config):
    src = tmp_path / "src"
    shutil.copytree(small_set, src)
    out = tmp_path / "resumed"
    run(small_config, open_source(str(src)), out, progress=False)
    # a new image early in the order shifts every later shard by one image
    shutil.copy(src / "chelsea" / "half.jpg", src / "astronaut" / "added.jpg")
    (out / "store.h5").unlink()
    kept = (out / "shards" / "shard-000000.h5").stat().st_mtime_ns
    run(small_config, open_source(str(src)), out, progress=False)
    assert (out / "shards" / "shard-000000.h5").stat().st_mtime_ns != kept
    # the codebook learned before the change is kept; with it, a fresh encode of the
    # changed source gives the same store
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(out / "codebook.npy", fresh / "codebook.npy")
    encode_images(small_config, open_source(str(src)), fresh / "codebook.npy", fresh,
                  progress=False)
    _assert_same(_contents(fresh), _contents(out))
    with Store(out) as s:
        assert s.n_images == 25 and "astronaut/added.jpg" in s.keys

import h5py
import numpy as np
import pytest

import features.pipeline.tasks as tasks
from features.sources import open_source
from features.sources.base import Item
from features.store.encodings import read_csr


def test_shard_tasks_of_a_worker_share_the_quantizer(tmp_path, small_set, small_store,
                                                     small_config, monkeypatch):
    """A worker builds the assigner of a codebook once for the shards it runs one after
    another, and a new one for other centroids; the shards are the same either way."""
    built = []
    real = tasks.quantizer_of

    def counting(codebook):
        built.append(codebook)
        return real(codebook)

    monkeypatch.setattr(tasks, "quantizer_of", counting)
    monkeypatch.setattr(tasks, "_quantizers", {})
    centroids = np.load(small_store / "codebook.npy")
    items = [item for _, item in zip(range(3), open_source(str(small_set)))]
    records = [tasks.process_shard(small_config, centroids.copy(), items,
                                   tmp_path / f"s{i}.h5", 0) for i in range(2)]
    assert len(built) == 1
    assert records[0]["checksum"] == records[1]["checksum"]
    other = centroids[::-1].copy()
    tasks.process_shard(small_config, other, items, tmp_path / "s2.h5", 0)
    assert len(built) == 2 and built[1] is other
    with h5py.File(tmp_path / "s0.h5", "r") as a, h5py.File(tmp_path / "s2.h5", "r") as b:
        k = len(centroids)
        # word w of one codebook is word k - 1 - w of the other
        np.testing.assert_array_equal(a["words"][:], k - 1 - b["words"][:])
        assert read_csr(a["counts"]).data.sum() == read_csr(b["counts"]).data.sum() > 0


def _shard_with_batch(small_config, centroids, items, path, batch, monkeypatch):
    monkeypatch.setattr(tasks, "STAGE_BATCH", batch)
    announced = []
    record = tasks.process_shard(small_config, centroids, items, path, 0,
                                 on_item=announced.append)
    return record, announced


@pytest.mark.parametrize("batch", [2, 3, 8, 100])
def test_stages_run_over_batches_and_announce_each_item_per_stage(tmp_path, small_set,
                                                                  small_store, small_config,
                                                                  monkeypatch, batch):
    """Decode, extract and assign each run over a few images before the next stage; the
    worker announces an item before every stage that works on it (a worker that dies is
    blamed on the item announced last), a failed item only for the stage that failed it,
    and the shard is byte for byte the one of one image at a time."""
    centroids = np.load(small_store / "codebook.npy")
    items = [item for _, item in zip(range(7), open_source(str(small_set)))]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    items[2] = Item("bad.jpg", -1, str(bad))
    one, announced_one = _shard_with_batch(small_config, centroids, items,
                                           tmp_path / "one.h5", 1, monkeypatch)
    record, announced = _shard_with_batch(small_config, centroids, items,
                                          tmp_path / "batched.h5", batch, monkeypatch)
    expected = []
    for start in range(0, len(items), batch):
        stage = list(range(start, min(start + batch, len(items))))
        decoded = [i for i in stage if i != 2]
        expected += stage + decoded + decoded
    assert announced == expected + [len(items)]
    assert announced_one == [i for i in range(7) for _ in range(1 if i == 2 else 3)] + [7]
    assert record["checksum"] == one["checksum"] and record["failed"] == 1

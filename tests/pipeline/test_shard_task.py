from concurrent.futures import Future

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


class _InOrder:
    """An executor that runs each task when it is submitted: the order of the reads then
    tells when the shard task asks for them."""

    def __init__(self, workers):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, func, *args):
        future = Future()
        future.set_result(func(*args))
        return future


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_next_batch_is_read_while_this_one_is_worked_on(tmp_path, small_set, small_store,
                                                        small_config, monkeypatch, batch):
    """The files of batch k + 1 are asked for before batch k is decoded, never further
    ahead; an item that cannot be read or that the source refused fails with its reason,
    and the shard, read ahead by a thread, is the one of one image at a time."""
    centroids = np.load(small_store / "codebook.npy")
    items = [item for _, item in zip(range(9), open_source(str(small_set)))]
    items[4] = Item("gone.jpg", -1, str(tmp_path / "gone.jpg"))      # never existed
    items[6] = Item("refused.jpg", -1, None, error="refused by the list")
    events = []
    real_read, real_decoded = tasks._read, tasks._decoded

    def read(item):
        events.append(("read", item.key))
        return real_read(item)

    def decoded(config, item, fault=None, data=None):
        events.append(("decode", item.key))
        return real_decoded(config, item, fault, data)

    with monkeypatch.context() as m:
        m.setattr(tasks, "_decoded", decoded)
        m.setattr(tasks, "_read", read)
        m.setattr(tasks, "ThreadPoolExecutor", _InOrder)
        _shard_with_batch(small_config, centroids, items, tmp_path / "order.h5", batch, m)
    keys = [item.key for item in items]
    batches = [keys[a:a + batch] for a in range(0, len(keys), batch)]
    expected = []
    for k, part in enumerate(batches):
        if k == 0:
            expected += [("read", key) for key in part if key != "refused.jpg"]
        if k + 1 < len(batches):
            expected += [("read", key) for key in batches[k + 1] if key != "refused.jpg"]
        expected += [("decode", key) for key in part]
    assert events == expected
    # with the thread
    record, _ = _shard_with_batch(small_config, centroids, items, tmp_path / "ahead.h5",
                                  batch, monkeypatch)
    one, _ = _shard_with_batch(small_config, centroids, items, tmp_path / "one.h5", 1,
                               monkeypatch)
    assert record["checksum"] == one["checksum"] and record["failed"] == 2
    with h5py.File(tmp_path / "ahead.h5", "r") as f:
        reasons = f["images/reason"].asstr()[:]
    assert reasons[4].startswith("cannot read: ") and reasons[6] == "refused by the list"

import h5py
import numpy as np

import features.pipeline.tasks as tasks
from features.sources import open_source
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

import h5py
import numpy as np
import pytest

from features.exceptions import ParameterError
from features.store import ImageResult, write_shard
from features.store.encodings import read_csr
from features.store.layout import UNDECODABLE


def _results(rng, n_words, lengths):
    out = []
    for i, m in enumerate(lengths):
        if m is None:
            out.append(ImageResult(key=f"bad{i}", label=i, status=UNDECODABLE, reason="x"))
            continue
        out.append(ImageResult(key=f"im{i}", label=i, width=40, height=30,
                               frames=rng.random((m, 4)).astype(np.float32),
                               words=rng.integers(0, n_words, m).astype(np.int32),
                               scale=np.zeros(m, np.int8), sha256="ab" * 32))
    return out


@pytest.mark.parametrize("n_words", [50, 40000])
def test_shard_counts_are_each_images_histogram(tmp_path, n_words):
    """The shard writer counts every image's words (all at once): failed images between,
    first and last have empty rows; words past int16 are stored as int32."""
    rng = np.random.default_rng(n_words)
    results = _results(rng, n_words, [None, 30, 1, None, 200, 0, 17, None])
    path = tmp_path / "shard-000000.h5"
    record = write_shard(path, results, n_words=n_words, first=0, keep_descriptors=False)
    assert record["count"] == 8 and record["failed"] == 3 and record["descriptors"] == 248
    with h5py.File(path, "r") as f:
        counts = read_csr(f["counts"])
        assert tuple(f["counts"].attrs["shape"]) == (8, n_words)
        assert f["words"].dtype == (np.int16 if n_words == 50 else np.int32)
        assert f["counts/indices"].dtype == f["counts/data"].dtype == np.int32
        offsets = f["offsets"][:]
        words = f["words"][:]
        np.testing.assert_array_equal(f["frames"][:],
                                      np.concatenate([r.frames for r in results]))
    for i, r in enumerate(results):
        np.testing.assert_array_equal(words[offsets[i]:offsets[i + 1]], r.words)
        ids, cnt = counts.row(i)
        ref_ids, ref_cnt = np.unique(r.words, return_counts=True)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(cnt, ref_cnt)


def test_shard_of_failed_images_only(tmp_path):
    results = _results(np.random.default_rng(0), 10, [None, None])
    write_shard(tmp_path / "s.h5", results, n_words=10, first=4, keep_descriptors=False)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert read_csr(f["counts"]).indptr.tolist() == [0, 0, 0]
        assert f["words"].shape == (0,) and f["words"].dtype == np.int16


def test_shard_refuses_words_that_do_not_match_frames(tmp_path):
    results = _results(np.random.default_rng(0), 10, [5, 6])
    results[1].words = results[1].words[:-1]
    with pytest.raises(ParameterError, match="offsets"):
        write_shard(tmp_path / "s.h5", results, n_words=10, first=0, keep_descriptors=False)
    assert not list(tmp_path.iterdir())

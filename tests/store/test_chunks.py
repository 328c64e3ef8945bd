"""Chunks compressed by the package (HDF5's shuffle and deflate filters, another deflate):
what a reader gets, for every dtype and chunk shape the store writes."""
import zlib

import h5py
import numpy as np
import pytest

from features.store.chunks import compress_chunk, filters_handled
from features.store.layout import COMPRESS, chunked


def _data(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.random(shape) * 0.1).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True
                        ).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64,
                                   np.float32, np.float64])
@pytest.mark.parametrize("shape, rows, by_column", [
    ((10_000,), 4096, False),          # partial last chunk
    ((8192,), 4096, False),            # whole chunks only
    ((3,), 4096, False),               # one partial chunk
    ((5000, 4), 1024, True),           # the shard's frames: a chunk per column
    ((777, 128), 256, False),          # descriptors: whole rows per chunk
    ((1, 5), 8, True)])
def test_chunked_reads_back(tmp_path, dtype, shape, rows, by_column):
    data = _data(dtype, shape)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        chunked(f, "x", data, rows, by_column=by_column)
        f.create_dataset("ref", data=data, chunks=f["x"].chunks, **COMPRESS)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        ours, ref = f["x"], f["ref"]
        assert ours.dtype == data.dtype and ours.shape == data.shape
        assert ours.compression == "gzip" and ours.shuffle
        assert ours.maxshape == (None,) + data.shape[1:]
        np.testing.assert_array_equal(ours[...], data)
        # chunk by chunk: the same shuffled values as HDF5's own filters store
        assert ours.id.get_num_chunks() == ref.id.get_num_chunks()
        for i in range(ours.id.get_num_chunks()):
            info = ours.id.get_chunk_info(i)
            assert info.filter_mask == 0
            _, a = ours.id.read_direct_chunk(info.chunk_offset)
            _, b = ref.id.read_direct_chunk(info.chunk_offset)
            assert zlib.decompress(a) == zlib.decompress(b)


def test_chunked_grows_like_any_dataset(tmp_path):
    """Stored chunks are HDF5's: the dataset can be resized and written by HDF5 after."""
    data = _data(np.int32, (5000,))
    with h5py.File(tmp_path / "c.h5", "w") as f:
        ds = chunked(f, "x", data, 4096)
        ds.resize((6000,))
        ds[5000:] = np.arange(1000, dtype=np.int32)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][:], np.concatenate([data, np.arange(1000)]))


def test_empty_data_is_a_contiguous_dataset(tmp_path):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        ds = chunked(f, "x", np.zeros((0, 4), np.float32), 100, by_column=True)
        assert ds.shape == (0, 4) and ds.chunks is None


def test_compress_chunk_is_shuffle_then_deflate():
    block = np.arange(12, dtype=np.int32).reshape(3, 4)
    raw = zlib.decompress(compress_chunk(block, 1))
    # the first byte of every value, then the second bytes...
    assert raw == bytes(block.reshape(-1).view(np.uint8).reshape(12, 4).T.tobytes())


def test_other_filters_are_left_to_hdf5(tmp_path):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        plain = f.create_dataset("a", shape=(10,), chunks=(5,), dtype=np.int32)
        gzip = f.create_dataset("b", shape=(10,), chunks=(5,), dtype=np.int32,
                                compression="gzip")
        both = f.create_dataset("c", shape=(10,), chunks=(5,), dtype=np.int32, **COMPRESS)
        assert filters_handled(plain) is None and filters_handled(gzip) is None
        assert filters_handled(both) == COMPRESS["compression_opts"]


def test_chunks_are_made_by_isal_where_it_is_installed():
    # a core dependency: the ten times faster deflate of the module doc
    from features.store import chunks
    assert chunks._deflate.__name__ == "isal.isal_zlib" and chunks._LEVEL == 2


def test_without_isal_zlib_makes_the_chunks_at_the_dataset_level(tmp_path, monkeypatch):
    """The fallback for platforms without the package: zlib, at the level the dataset
    records; what a reader gets does not change."""
    from features.store import chunks
    monkeypatch.setattr(chunks, "_deflate", zlib)
    monkeypatch.setattr(chunks, "_LEVEL", None)
    block = np.arange(4096, dtype=np.int32)
    shuffled = block.view(np.uint8).reshape(4096, 4).T.tobytes()
    for level in (1, 6):
        assert compress_chunk(block, level) == zlib.compress(shuffled, level)
    data = _data(np.int16, (5000, 4))
    with h5py.File(tmp_path / "c.h5", "w") as f:
        chunked(f, "x", data, 1024, by_column=True)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f["x"].compression == "gzip" and f["x"].shuffle
        np.testing.assert_array_equal(f["x"][...], data)

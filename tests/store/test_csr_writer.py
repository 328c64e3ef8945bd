"""CSR encodings written a block of rows at a time (the merge's way): chunks compressed by
the writer itself, in threads, and a second encoding sharing the rows of the first."""
import zlib

import h5py
import numpy as np
import pytest

from features.exceptions import ParameterError, StoreError
from features.store.encodings import CSRWriter, EncodingRows
from features.store.layout import COMPRESS, ENCODING_CHUNK


def _rows(seed, m, dim, per_row):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, per_row + 1, m)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate([np.sort(rng.choice(dim, k, replace=False)) for k in lengths]
                             ).astype(np.int32) if m else np.zeros(0, np.int32)
    return indptr, indices


def _blocks(n, block, dim, per_row):
    out = []
    for start in range(0, n, block):
        m = min(block, n - start)
        indptr, indices = _rows(start, m, dim, per_row)
        counts = np.random.default_rng(start + 1).integers(1, 50, len(indices)).astype(np.int32)
        out.append((indptr, indices, counts, (counts * 0.37).astype(np.float32)))
    return out


def _expected(blocks):
    if not blocks:
        return (np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32),
                np.zeros(0, np.float32))
    indptr = [np.zeros(1, np.int64)]
    for b in blocks:
        indptr.append(b[0][1:] + indptr[-1][-1])
    cat = [np.concatenate([b[i] for b in blocks]) for i in (1, 2, 3)]
    return (np.concatenate(indptr), *cat)


# values per block below, at and across the chunk size; empty blocks and rows; one row
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n, block, per_row", [(3000, 400, 60), (1000, 1000, 200), (50, 7, 3),
                                               (64, 16, 0), (1, 1, 30), (0, 1, 5),
                                               (2 * ENCODING_CHUNK, 2 * ENCODING_CHUNK, 1)])
def test_blocks_read_back_as_written(tmp_path, threads, n, block, per_row):
    dim = 300
    blocks = _blocks(n, block, dim, per_row)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        enc = f.create_group("encodings")
        bovw = CSRWriter(enc, "bovw", n, dim, np.float32, threads=threads, method="bovw")
        counts = CSRWriter(enc, "bovw_counts", n, dim, np.int32, same_rows_as=bovw,
                           threads=threads)
        for indptr, indices, c, w in blocks:
            bovw.append(indptr, indices, w)
            counts.append(indptr, indices, c)
        bovw.close()
        counts.close()
    indptr, indices, c, w = _expected(blocks)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        for name, data in (("bovw", w), ("bovw_counts", c)):
            g = f["encodings"][name]
            np.testing.assert_array_equal(g["indptr"][:], indptr)
            np.testing.assert_array_equal(g["indices"][:], indices)
            np.testing.assert_array_equal(g["data"][:], data)
            assert g["data"].dtype == data.dtype
            assert tuple(g.attrs["shape"]) == (n, dim)
            # the layout of every encoding: growable, chunked and compressed
            for ds in (g["indices"], g["data"]):
                assert ds.chunks == (ENCODING_CHUNK,) and ds.maxshape == (None,)
                assert ds.compression == COMPRESS["compression"] and ds.shuffle
        assert f["encodings/bovw"].attrs["method"] == "bovw"
        # the second encoding's row structure is the first one's, stored once
        assert f["encodings/bovw_counts/indices"] == f["encodings/bovw/indices"]
        assert f["encodings/bovw_counts/indptr"] == f["encodings/bovw/indptr"]
        rows = EncodingRows(f, "bovw_counts")
        if n:
            dense = rows.block(0, n)
            assert dense.sum() == c.sum()


def test_chunks_are_those_hdf5_writes(tmp_path):
    """The chunks the writer compresses itself inflate to what HDF5's own filters store,
    at about the same size."""
    dim, n = 1000, 2000
    blocks = _blocks(n, 300, dim, 120)
    indptr, indices, c, w = _expected(blocks)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        writer = CSRWriter(f, "bovw", n, dim, np.float32, threads=2)
        for b in blocks:
            writer.append(b[0], b[1], b[3])
        writer.close()
        ref = f.create_dataset("ref", data=w, chunks=(ENCODING_CHUNK,), maxshape=(None,),
                               **COMPRESS)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        ours, theirs = f["bovw/data"], f["ref"]
        assert ours.id.get_num_chunks() == theirs.id.get_num_chunks() == -(-len(w) //
                                                                           ENCODING_CHUNK)
        sizes = []
        for i in range(ours.id.get_num_chunks()):
            info = ours.id.get_chunk_info(i)
            assert info.filter_mask == 0            # every filter applied
            _, chunk = ours.id.read_direct_chunk(info.chunk_offset)
            _, expect = theirs.id.read_direct_chunk(info.chunk_offset)
            # another deflate, so other bytes: the same shuffled values inside
            assert zlib.decompress(chunk) == zlib.decompress(expect)
            sizes.append((len(chunk), len(expect)))
        assert sum(s for s, _ in sizes) <= 1.1 * sum(e for _, e in sizes)
        np.testing.assert_array_equal(ours[:], theirs[:])


def test_uncompressed_layout_is_written_through_hdf5(tmp_path, monkeypatch):
    """A dataset of other filters than shuffle + deflate is not compressed by the writer."""
    from features.store import encodings

    monkeypatch.setattr(encodings, "COMPRESS", {})
    blocks = _blocks(100, 30, 50, 10)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        writer = CSRWriter(f, "e", 100, 50, np.int32, threads=2)
        for b in blocks:
            writer.append(b[0], b[1], b[2])
        writer.close()
        assert f["e/data"].compression is None
        np.testing.assert_array_equal(f["e/data"][:], _expected(blocks)[2])


def test_shared_rows_must_be_the_same(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        first = CSRWriter(f, "a", 4, 10)
        second = CSRWriter(f, "b", 4, 10, np.int32, same_rows_as=first)
        indptr, indices = np.array([0, 1, 3]), np.array([2, 1, 5], np.int32)
        with pytest.raises(ParameterError, match="to that one first"):
            second.append(indptr, indices, np.ones(3, np.int32))
        first.append(indptr, indices, np.ones(3, np.float32))
        with pytest.raises(ParameterError, match="append the same rows"):
            second.append(indptr, np.array([2, 1, 6], np.int32), np.ones(3, np.int32))
        second.append(indptr, indices, np.ones(3, np.int32))
        first.append(np.array([0, 0, 1]), np.array([9], np.int32), np.ones(1, np.float32))
        second.append(np.array([0, 0, 1]), np.array([9], np.int32), np.ones(1, np.int32))
        first.close()
        second.close()
        with pytest.raises(ParameterError, match="cannot share"):
            CSRWriter(f, "c", 5, 10, same_rows_as=first)


def test_missing_rows_are_an_error(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        writer = CSRWriter(f, "a", 3, 10, threads=2)
        writer.append(np.array([0, 2]), np.array([1, 4], np.int32), np.ones(2, np.float32))
        with pytest.raises(StoreError, match="holds 1 of its 3 rows"):
            writer.close()

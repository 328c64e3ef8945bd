"""The image table written a block of images at a time (the merge's way)."""
import h5py
import numpy as np
import pytest

from features.exceptions import StoreError
from features.store.keys import KeyTable
from features.store.layout import OK
from features.store.write import ImageTable


def _columns(start, m):
    rows = np.arange(start, start + m)
    return dict(key=[f"c{r % 97}/img_{r}.JPEG" for r in rows], label=(rows % 11).astype(np.int32),
                width=(rows % 500).astype(np.int32), height=(rows % 300).astype(np.int32),
                status=np.where(rows % 13 == 0, 2, OK).astype(np.uint8),
                reason=["bad" if r % 13 == 0 else "" for r in rows],
                sha256=[f"{r:064x}" for r in rows])


# blocks smaller than, equal to and across the 32k-row chunks, and a table of one chunk
@pytest.mark.parametrize("n, block", [(70_001, 1000), (70_001, 32_768), (65_536, 40_000),
                                      (500, 7), (1, 1)])
def test_blocks_across_chunks_read_back(tmp_path, n, block):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        table = ImageTable(f, n)
        for start in range(0, n, block):
            m = min(block, n - start)
            assert table.append(**_columns(start, m)) == start
        table.close()
    expect = _columns(0, n)
    with h5py.File(tmp_path / "t.h5") as f:
        g = f["images"]
        assert list(g["key"].asstr()[:]) == expect["key"]
        assert list(g["reason"].asstr()[:]) == expect["reason"]
        assert [d.decode() for d in g["sha256"][:]] == expect["sha256"]
        for name in ("label", "width", "height", "status"):
            np.testing.assert_array_equal(g[name][:], expect[name])
    with h5py.File(tmp_path / "t.h5", "r") as f:     # the key index, written at close
        index = KeyTable(f, tmp_path / "t.h5")
        assert len(index) == n
        for row in {0, n // 2, n - 1}:
            assert index.row_of(expect["key"][row]) == row


def test_closing_a_short_table_is_refused(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        table = ImageTable(f, 10)
        table.append(**_columns(0, 4))
        with pytest.raises(StoreError, match="4 of its 10"):
            table.close()

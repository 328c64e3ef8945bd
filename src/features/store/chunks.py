"""HDF5 chunks compressed here, written as they are (HDF5's direct chunk write).

The store's compressed datasets use two filters, shuffle then deflate (``layout.COMPRESS``).
HDF5 applies them itself, in the writing thread, with zlib: at level 1 that was about 120 ms
of a 1000-image sbow shard (0.12 ms an image, 4% of pass 2) and most of a big merge. This
module produces the same chunks, shuffle then deflate, with ISA-L's deflate (the ``isal``
package): its level 2 makes streams about as small as zlib's level 1 (3.86 against 3.91 MB
for a shard's frames, words and counts) about 10 times faster (11 against 120 ms). Any
deflate stream inflates with zlib, so every HDF5 reader reads them; the dataset's recorded
deflate level stays the one ``COMPRESS`` asks for (it only told the compressor). Without the
package, zlib at that level compresses them.

:func:`compress_chunk` makes one chunk's bytes; :func:`write_chunks` writes a whole array
into a new dataset chunk by chunk; :func:`filters_handled` says whether a dataset's filters
are the two this module applies (any other dataset is written through HDF5).
"""
from __future__ import annotations

import itertools

import h5py
import numpy as np

try:
    from isal import isal_zlib as _deflate
    # ISA-L's levels are 0-3; 2 gave zlib level 1's size (see the module doc)
    _LEVEL = 2
except ImportError:           # pragma: no cover - isal is a dependency; kept for odd platforms
    import zlib as _deflate
    _LEVEL = None             # the dataset's own level

__all__ = ["compress_chunk", "write_chunks", "filters_handled"]


def filters_handled(dataset) -> int | None:
    """The deflate level of ``dataset`` when its filters are exactly shuffle then deflate,
    else None."""
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    if [f[0] for f in filters] != [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]:
        return None
    return int(filters[1][2][0])


def compress_chunk(block: np.ndarray, level: int) -> bytes:
    """The stored bytes of one whole chunk (C-contiguous, the dataset's dtype and chunk
    shape): HDF5's shuffle (the first byte of every value, then the second bytes...), then
    a zlib deflate stream. ``level`` is the dataset's deflate level (used by zlib only)."""
    flat = block.reshape(-1)
    shuffled = np.ascontiguousarray(flat.view(np.uint8).reshape(len(flat),
                                                                flat.dtype.itemsize).T)
    return _deflate.compress(shuffled, _LEVEL if _LEVEL is not None else level)


def write_chunks(dataset, data: np.ndarray, level: int) -> None:
    """``data`` (the dataset's shape and dtype) into the new, empty chunked ``dataset`` of
    shuffle + deflate, one compressed chunk at a time; partial chunks at the ends padded
    with zeros (HDF5's fill), as HDF5 stores them."""
    shape, chunks = data.shape, dataset.chunks
    grid = [range(0, n, c) for n, c in zip(shape, chunks)]
    for corner in itertools.product(*grid):
        block = data[tuple(slice(a, a + c) for a, c in zip(corner, chunks))]
        if block.shape != chunks:
            padded = np.zeros(chunks, data.dtype)
            padded[tuple(slice(0, n) for n in block.shape)] = block
            block = padded
        dataset.id.write_direct_chunk(corner, compress_chunk(np.ascontiguousarray(block),
                                                             level))

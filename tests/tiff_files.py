"""Minimal TIFF and BigTIFF files written by hand (both byte orders), for the size checks."""
from __future__ import annotations

import struct

import numpy as np


def gray_tiff(pixels: np.ndarray | None = None, *, size=None, order="<", big=False) -> bytes:
    """An uncompressed 8-bit gray TIFF (BigTIFF when `big`) of `pixels`; or, with `size`
    (width, height) instead, a header announcing that size over a few bytes of strip data
    (a decompression bomb as far as the header goes)."""
    if pixels is not None:
        height, width = pixels.shape
        strip = np.ascontiguousarray(pixels, np.uint8).tobytes()
    else:
        width, height = size
        strip = b"\0" * 16
    mark = b"II" if order == "<" else b"MM"
    if big:
        head_len, entry, count_fmt, layout = 16, 20, "Q", "HHQ8s"
        value_fmt = {3: "H", 4: "I", 16: "Q"}
    else:
        head_len, entry, count_fmt, layout = 8, 12, "H", "HHI4s"
        value_fmt = {3: "H", 4: "I"}
    long_type = 16 if big else 4
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
            (273, long_type, 0), (277, 3, 1), (278, 4, height), (279, long_type, len(strip))]
    ifd = head_len
    ifd_len = struct.calcsize(order + count_fmt) + entry * len(tags) + (8 if big else 4)
    data_at = ifd + ifd_len
    if big:
        out = mark + struct.pack(order + "HHHQ", 43, 8, 0, ifd)
    else:
        out = mark + struct.pack(order + "HI", 42, ifd)
    out += struct.pack(order + count_fmt, len(tags))
    for tag, typ, value in tags:
        if tag == 273:
            value = data_at
        packed = struct.pack(order + value_fmt[typ], value)
        out += struct.pack(order + layout, tag, typ, 1, packed.ljust(8 if big else 4, b"\0"))
    out += b"\0" * (8 if big else 4)  # no next IFD
    return out + strip

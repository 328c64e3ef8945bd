"""Bytes -> grayscale uint8 array.

:func:`decode_gray` turns the bytes of one image file into a 2-D ``uint8``
array, shrunk so that its longer side is at most ``max_side``.  One policy holds
for every image, whatever its format:

Format
    Sniffed from the leading bytes (:func:`sniff_format`), never taken from the
    file name: ILSVRC-2012 train holds a PNG named ``.JPEG`` and CMYK JPEGs.
    Decoded formats: JPEG, PNG, GIF, BMP, TIFF, WebP, PNM (PBM/PGM/PPM), JPEG
    2000, AVIF and Sun raster.  Recognized but refused (``unsupported format``):
    HEIC and the floating-point formats (OpenEXR, Radiance HDR, PFM), which have
    no single sensible 8-bit gray rendering.  Anything else: ``not an image``.
Grayscale
    ITU-R BT.601 luma, as OpenCV computes it (``0.299 R + 0.587 G + 0.114 B``);
    for YCbCr JPEGs this is the stored Y channel, as libjpeg returns it.
    CMYK (and YCCK) JPEGs are converted by OpenCV's decoder: a CMYK JPEG as
    Pillow and Photoshop write it (Adobe-inverted) comes out within about one
    gray level, on average, of its RGB original.
Bit depth
    16-bit PNG and TIFF keep their high byte (``v >> 8``), as OpenCV does.
Alpha
    Ignored: the gray value comes from the stored color channels, without
    compositing over any background (the behaviour of OpenCV and of Pillow's
    ``convert('L')``).
EXIF orientation
    Applied: the image is returned as a viewer displays it, and ``width`` and
    ``height`` are the size after orientation (so a portrait photo stored as
    landscape with orientation 6 has ``width < height``).  The reduced and the
    full JPEG paths apply it identically.
Animated images
    GIF, WebP, AVIF and TIFF: the first frame (page) only.
Decompression bombs
    The image size is read from the header before any pixel is decoded, for
    every decoded format (JPEG, PNG, GIF screen and first frame, BMP, classic
    TIFF and BigTIFF in both byte orders, WebP, PNM and PAM, JPEG 2000, AVIF,
    Sun raster); more than ``max_pixels`` pixels (default 178,956,970,
    Pillow's hard limit) is a :class:`DecodeError`, and so is a header whose
    size cannot be read: nothing is decoded blind.
Truncation
    A JPEG without an end-of-image marker after its scan data and a PNG without
    an ``IEND`` chunk are refused ("truncated JPEG", "truncated PNG") rather
    than decoded with a gray bottom.  Bytes after the end marker are ignored.
Resizing
    ``scale = max_side / max(w, h)`` when the longer side exceeds ``max_side``
    (never enlarged); the new size is ``round(w * scale), round(h * scale)``,
    each at least 1, reached with the arithmetic of OpenCV's ``INTER_AREA``
    (bit-identical, computed by ``features._ext._area``).  For JPEG the decoder
    first scales in the DCT domain (libjpeg, through OpenCV's
    ``IMREAD_REDUCED_GRAYSCALE_*``) by the largest factor r in 2, 4, 8 whose
    output (``ceil(w / r), ceil(h / r)``) is still at least twice the target
    size, and the area resize finishes the reduction: 1.7-3x faster on
    JPEGs of 1024 px and more (benchmarks/results/decode.md), at the same
    output size and within half a gray level of the full decode.  Typical
    ILSVRC images (500x375 to a max side of 300) are decoded at full size:
    no factor leaves twice the target.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from ._ext import load
from .exceptions import DecodeError, ParameterError

__all__ = ["DecodeError", "Decoded", "decode_gray", "sniff_format", "image_size",
           "target_size", "MAX_PIXELS"]

#: Default pixel-count limit: Pillow's hard limit for decompression bombs.
MAX_PIXELS = 178_956_970

#: Formats that decode_gray decodes.
_DECODED = frozenset({"jpeg", "png", "gif", "bmp", "tiff", "webp", "pnm", "jp2",
                      "avif", "ras"})

_REDUCED_FLAGS = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


@dataclass(frozen=True)
class Decoded:
    """A decoded grayscale image.

    Attributes
    ----------
    gray : ndarray of uint8, shape (h, w)
        C-contiguous, shrunk so that ``max(h, w) <= max_side`` (never enlarged).
    width, height : int
        Size of the original image after EXIF orientation, before resizing.
    format : str
        Format sniffed from the bytes: 'jpeg', 'png', 'gif', 'bmp', 'tiff',
        'webp', 'pnm', 'jp2', 'avif' or 'ras'.
    """

    gray: np.ndarray
    width: int
    height: int
    format: str


def sniff_format(data: bytes) -> str | None:
    """Name the image format from the leading bytes of `data`.

    Returns
    -------
    str or None
        'jpeg', 'png', 'gif', 'bmp', 'tiff', 'webp', 'pnm', 'jp2', 'avif',
        'ras', or one of the refused formats 'heic', 'exr', 'hdr', 'pfm';
        None when the bytes start like no image format known here.
    """
    head = bytes(data[:32])
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7") \
            and head[2:3] in (b" ", b"\t", b"\r", b"\n"):
        return "pnm"
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xffO\xffQ":
        return "jp2"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "heic"
        return None
    if head[:4] == b"\x59\xa6\x6a\x95":
        return "ras"
    if head[:4] == b"v/1\x01":
        return "exr"
    if head[:10] == b"#?RADIANCE" or head[:6] == b"#?RGBE":
        return "hdr"
    if head[:2] in (b"PF", b"Pf") and head[2:3] in (b"\n", b"\r", b" "):
        return "pfm"
    return None


# --------------------------------------------------------------------------
# header parsing: image size (and JPEG layout) without decoding pixels

@dataclass(frozen=True)
class _Header:
    width: int          # as displayed (after EXIF orientation, JPEG only)
    height: int
    truncated: bool = False
    reducible: bool = False  # libjpeg DCT scaling applies
    orientation: int = 1     # EXIF orientation (JPEG)


def _jpeg_header(data):
    """Parse JPEG markers up to the first scan.

    Returns a _Header, or raises DecodeError when the markers are broken.
    """
    n = len(data)
    pos = 2
    size = None
    orientation = 1
    sof = None
    while True:
        # markers may be preceded by any number of 0xFF fill bytes
        start = pos
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise DecodeError("truncated JPEG")
        if pos == start:
            raise DecodeError("corrupt JPEG (bad marker)")
        marker = data[pos]
        pos += 1
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker == 0xD9:
            raise DecodeError("corrupt JPEG (no image data)")
        if pos + 2 > n:
            raise DecodeError("truncated JPEG")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise DecodeError("corrupt JPEG (bad segment length)")
        seg_end = pos + length
        if seg_end > n:
            raise DecodeError("truncated JPEG")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                      0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if length < 8:
                raise DecodeError("corrupt JPEG (bad frame header)")
            height, width = struct.unpack_from(">HH", data, pos + 3)
            size = (width, height)
            sof = marker
        elif marker == 0xE1 and orientation == 1 and data[pos + 2:pos + 8] == b"Exif\x00\x00":
            orientation = _exif_orientation(data, pos + 8, seg_end)
        elif marker == 0xDA:
            if size is None:
                raise DecodeError("corrupt JPEG (no frame header)")
            # entropy-coded data never holds FF D9 (FF is stuffed as FF 00),
            # so a complete file has its EOI marker after the first scan
            truncated = data.rfind(b"\xff\xd9", seg_end) < 0
            width, height = size
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            # lossless JPEG (SOF3/SOF7/SOF11/SOF15) has no DCT to scale
            reducible = sof not in (0xC3, 0xC7, 0xCB, 0xCF)
            return _Header(width, height, truncated, reducible, orientation)
        pos = seg_end


def _exif_orientation(data, start, end):
    """Orientation tag (1..8) of the TIFF structure in data[start:end]; 1 if absent."""
    tiff = bytes(data[start:end])
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for i in range(count):
            tag, typ, _, value = struct.unpack_from(order + "HHI4s", tiff, ifd + 2 + 12 * i)
            if tag == 0x0112 and typ == 3:
                (orient,) = struct.unpack_from(order + "H", value, 0)
                return orient if 1 <= orient <= 8 else 1
    except struct.error:
        pass
    return 1


_MAX_TILE = 1024
_TIFF_VALUE = {3: "H", 4: "I", 8: "h", 9: "i", 16: "Q", 17: "q"}  # SHORT LONG SSHORT SLONG LONG8


def _tiff_size(data):
    """Width and height of the first IFD (the page OpenCV decodes), classic TIFF or BigTIFF,
    either byte order."""
    order = "<" if data[:2] == b"II" else ">"
    if data[2:4] in (b"+\x00", b"\x00+"):  # BigTIFF: 64-bit offsets, 20-byte entries
        offset_size, reserved, ifd = struct.unpack_from(order + "HHQ", data, 4)
        if offset_size != 8 or reserved != 0:
            raise DecodeError("corrupt TIFF header (bad BigTIFF header)")
        (count,) = struct.unpack_from(order + "Q", data, ifd)
        first, entry, layout = ifd + 8, 20, "HHQ8s"
    else:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        first, entry, layout = ifd + 2, 12, "HHI4s"
    if first + count * entry > len(data):
        raise DecodeError("corrupt TIFF header (directory past the end of the file)")
    size = {}
    for i in range(count):
        tag, typ, n, value = struct.unpack_from(order + layout, data, first + entry * i)
        if tag in (256, 257, 322, 323):  # width, height, tile width, tile length
            if typ not in _TIFF_VALUE or n != 1:
                raise DecodeError("corrupt TIFF header (bad image size field)")
            (size[tag],) = struct.unpack_from(order + _TIFF_VALUE[typ], value, 0)
    if 256 not in size or 257 not in size:
        raise DecodeError("corrupt TIFF header (no image width or height)")
    width, height = size[256], size[257]
    # the decoder allocates a whole tile, and a tile may overhang a small image (256 x 256
    # tiles for a 100 x 70 image are common); one far larger than both would be a bomb that
    # the image size does not show
    if size.get(322, 0) > max(width, _MAX_TILE) or size.get(323, 0) > max(height, _MAX_TILE):
        raise DecodeError("corrupt TIFF header (a tile larger than the image)")
    return width, height


def _pnm_tokens(data, pos, n, count):
    tokens = []
    while len(tokens) < count and pos < n:
        c = data[pos:pos + 1]
        if c == b"#":
            while pos < n and data[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
        elif c.isspace():
            pos += 1
        else:
            start = pos
            while pos < n and not data[pos:pos + 1].isspace():
                pos += 1
            tokens.append(bytes(data[start:pos]))
    return tokens


def _pnm_size(data):
    n = min(len(data), 4096)
    if data[1:2] == b"7":  # PAM: "WIDTH w", "HEIGHT h", ... lines up to ENDHDR
        tokens = _pnm_tokens(data, 2, n, 64)
        fields = dict(zip(tokens[::2], tokens[1::2]))
        return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
    tokens = _pnm_tokens(data, 2, n, 2)
    return int(tokens[0]), int(tokens[1])


def _webp_size(data):
    chunk = bytes(data[12:16])
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise DecodeError("corrupt WebP header")
        w, h = struct.unpack_from("<HH", data, 26)
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        b = int.from_bytes(data[21:25], "little")
        return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    raise DecodeError("corrupt WebP header (no VP8, VP8L or VP8X chunk)")


def _gif_size(data):
    """The larger of the logical screen and the first frame (a frame may stick out of the
    screen, and the decoder allocates what it covers)."""
    w, h, packed = struct.unpack_from("<HHB", data, 6)
    pos = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    n = min(len(data), 1 << 20)  # extensions before the first frame are small
    while pos < n:
        block = data[pos]
        if block == 0x2C:  # image descriptor
            left, top, fw, fh = struct.unpack_from("<HHHH", data, pos + 1)
            return max(w, left + fw), max(h, top + fh)
        if block != 0x21:  # trailer or garbage: the decoder says what is wrong
            break
        pos += 2
        while pos < n and data[pos]:
            pos += data[pos] + 1
        pos += 1
    return w, h


def _jp2_size(data):
    head = bytes(data[:65536])
    i = head.find(b"\xffQ")  # SIZ marker of the codestream
    if i >= 0 and i + 22 <= len(head):
        xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", head, i + 6)
        return xsiz - xo, ysiz - yo
    i = head.find(b"ihdr")
    if i >= 0 and i + 12 <= len(head):
        h, w = struct.unpack_from(">II", head, i + 4)
        return w, h
    return None


def _avif_size(data):
    head = bytes(data[:65536])
    i = head.find(b"ispe")
    if i >= 0 and i + 16 <= len(head):
        w, h = struct.unpack_from(">II", head, i + 8)
        return w, h
    return None


def _header(data, fmt):
    """Header of `data` in format `fmt`: a _Header; DecodeError when the size cannot be read
    (a file is never decoded without knowing how many pixels it will take)."""
    if fmt == "jpeg":
        return _jpeg_header(data)
    try:
        if fmt == "png":
            if len(data) < 24 or data[12:16] != b"IHDR":
                raise DecodeError("corrupt PNG header")
            w, h = struct.unpack_from(">II", data, 16)
            truncated = data.rfind(b"IEND") < 0
            return _Header(w, h, truncated)
        if fmt == "gif":
            w, h = _gif_size(data)
        elif fmt == "bmp":
            (hsize,) = struct.unpack_from("<I", data, 14)
            if hsize == 12:
                w, h = struct.unpack_from("<HH", data, 18)
            else:
                w, h = struct.unpack_from("<ii", data, 18)
            w, h = abs(w), abs(h)  # negative height: top-down rows
        elif fmt == "ras":
            w, h = struct.unpack_from(">II", data, 4)
        else:
            parse = {"tiff": _tiff_size, "pnm": _pnm_size, "webp": _webp_size,
                     "jp2": _jp2_size, "avif": _avif_size}[fmt]
            size = parse(data)
            if size is None:
                # decoding blind would let the decoder allocate whatever the file claims
                raise DecodeError(f"cannot read the image size from the {fmt.upper()} header")
            w, h = size
    except (struct.error, ValueError, IndexError, KeyError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"corrupt {fmt.upper()} header") from None
    return _Header(w, h)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of `data`; None for bytes that are no format
    decoded here.

    For JPEG the size is the one after EXIF orientation, as
    :func:`decode_gray` reports it.  Raises DecodeError on a corrupt header.
    """
    fmt = sniff_format(data)
    if fmt not in _DECODED:
        return None
    header = _header(data, fmt)
    return None if header is None else (header.width, header.height)


def target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Size (w, h) after shrinking so that the longer side is at most `max_side`.

    Never enlarges; each side is at least 1.
    """
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


#: The DCT-scaled output must be at least this many times the target size.
#: Two area filters in a row (libjpeg's block average, then the resize) are
#: not one: the smaller the second step, the more they differ.  Requiring only
#: that the scaled output cover the target (margin 1) saved 0-30% of the time
#: but tripled the error against an exact area downsample of the full decode
#: (0.7-1.2 gray levels instead of 0.25-0.45; benchmarks/results/decode.md).
_REDUCE_MARGIN = 2


def _reduction(width, height, tw, th):
    """Largest DCT scaling factor r whose output still covers twice the target size."""
    for r in (8, 4, 2):
        if math.ceil(width / r) >= _REDUCE_MARGIN * tw and \
                math.ceil(height / r) >= _REDUCE_MARGIN * th:
            return r
    return 1


def decode_gray(data: bytes, max_side: int | None = None, *,
                max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode image bytes to a 2-D uint8 grayscale array.

    The policy for color, bit depth, alpha, EXIF orientation, animation and
    limits is described in the module docstring.

    Parameters
    ----------
    data : bytes-like
        The encoded image file.
    max_side : int, optional
        Shrink (area interpolation) so that the longer side is at most this;
        never enlarge.  For JPEG, DCT-domain scaling does most of the work.
    max_pixels : int, optional
        Refuse, before decoding, images with more pixels than this.

    Returns
    -------
    Decoded

    Raises
    ------
    DecodeError
        With a short reason ('empty file', 'not an image (starts with ...)',
        'truncated JPEG', 'too many pixels (...)', ...).
    ValueError
        When `max_side` or `max_pixels` is not a positive integer.
    """
    if max_side is not None and (isinstance(max_side, bool) or int(max_side) != max_side
                                 or max_side < 1):
        raise ParameterError(f"max_side must be a positive integer or None, got {max_side!r}")
    if isinstance(max_pixels, bool) or int(max_pixels) != max_pixels or max_pixels < 1:
        raise ParameterError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if not isinstance(data, bytes):
        data = bytes(memoryview(data))  # TypeError for str and other non-buffers
    if len(data) == 0:
        raise DecodeError("empty file")
    fmt = sniff_format(data)
    if fmt is None:
        raise DecodeError(f"not an image (starts with {bytes(data[:8])!r})")
    if fmt not in _DECODED:
        raise DecodeError(f"unsupported format: {fmt}")
    header = _header(data, fmt)  # every decoded format's size is known before decoding
    if header.width < 1 or header.height < 1:
        raise DecodeError(f"corrupt {fmt.upper()} header ({header.width}x{header.height})")
    _check_pixels(header.width, header.height, max_pixels)
    if header.truncated:
        raise DecodeError(f"truncated {fmt.upper()}")

    buf = np.frombuffer(data, np.uint8)
    r = 1
    if header.reducible and max_side is not None:
        tw, th = target_size(header.width, header.height, max_side)
        r = _reduction(header.width, header.height, tw, th)
    try:
        gray = cv2.imdecode(buf, _REDUCED_FLAGS[r])
    except cv2.error as exc:
        raise DecodeError(f"corrupt {fmt.upper()} ({_cv_reason(exc)})") from None
    if gray is None or gray.size == 0:
        raise DecodeError(f"corrupt {fmt.upper()}")
    if gray.ndim != 2:  # defensive: OpenCV returns 2-D for IMREAD_GRAYSCALE
        gray = gray[..., 0]
    if gray.dtype != np.uint8:
        gray = (gray >> 8).astype(np.uint8) if gray.dtype == np.uint16 else \
            np.clip(gray, 0, 255).astype(np.uint8)

    if r > 1:
        width, height = header.width, header.height
        expected = (math.ceil(height / r), math.ceil(width / r))
        if gray.shape == expected:
            gray = _finish_reduced(gray, r, width, height, tw, th, header.orientation)
    else:
        height, width = gray.shape
        if width * height > max_pixels:  # a header that under-stated the size
            del gray  # no pixels kept alive by the error's traceback
            _check_pixels(width, height, max_pixels)
    tw, th = target_size(width, height, max_side)
    if gray.shape != (th, tw):
        gray = _shrink(gray, tw, th)
    return Decoded(np.ascontiguousarray(gray), int(width), int(height), fmt)


def _shrink(gray, tw, th):
    """``cv2.resize(gray, (tw, th), interpolation=cv2.INTER_AREA)``, bit-identical: the
    area kernel is about twice as fast on the typical 500 x 375 -> 300 x 225 (it only
    shrinks; OpenCV would enlarge a side with bilinear weights, which no caller asks)."""
    height, width = gray.shape
    if tw > width or th > height:
        return cv2.resize(gray, (tw, th), interpolation=cv2.INTER_AREA)
    out = np.empty((th, tw), np.uint8)
    load("_area", "area resize").area_resize(np.ascontiguousarray(gray), out)
    return out


def _shrink_by(gray, fx, fy, tw, th):
    """``cv2.resize(gray, None, fx=fx, fy=fy, interpolation=cv2.INTER_AREA)[:th, :tw]``,
    bit-identical. OpenCV's size is ``round(w * fx), round(h * fy)`` (ties to even, as
    Python's round) and its factors ``1 / fx, 1 / fy``, not the ratio of the sizes: the
    kernel takes them as they are, and computes only the part kept."""
    height, width = gray.shape
    full_w, full_h = round(width * fx), round(height * fy)
    if not (0 < fx <= 1 and 0 < fy <= 1) or full_w < 1 or full_h < 1:
        return cv2.resize(gray, None, fx=fx, fy=fy, interpolation=cv2.INTER_AREA)[:th, :tw]
    out = np.empty((min(th, full_h), min(tw, full_w)), np.uint8)
    load("_area", "area resize").area_resize_by(np.ascontiguousarray(gray), out, fx, fy)
    return out


# EXIF orientation -> (flip x, flip y): whether libjpeg's partial last column
# (row) of a scaled decode ends up on the left (top) once the image is oriented
_PARTIAL_FLIPS = {1: (False, False), 2: (True, False), 3: (True, True), 4: (False, True),
                  5: (False, False), 6: (True, False), 7: (True, True), 8: (False, True)}


def _finish_reduced(gray, r, width, height, tw, th, orientation):
    """Area-resize a DCT-scaled decode of a width x height image to (tw, th).

    When a side is not a multiple of r, the scaled decode's last column (row)
    stands for less than r source pixels, the rest being block padding;
    resizing the whole array would stretch the image by up to a pixel of the
    decode (which costs more than the DCT scaling itself on detailed images).
    Resizing by the exact factor and dropping the partial pixel keeps the
    geometry of a full decode.
    """
    flip_x, flip_y = _PARTIAL_FLIPS.get(orientation, (False, False))
    flip_x &= width % r != 0
    flip_y &= height % r != 0
    code = {(True, False): 1, (False, True): 0, (True, True): -1}.get((flip_x, flip_y))
    if code is not None:
        gray = cv2.flip(gray, code)
    out = _shrink_by(gray, tw * r / width, th * r / height, tw, th)
    if code is not None:
        out = cv2.flip(out, code)
    return out


def _check_pixels(width, height, max_pixels):
    if width * height > max_pixels:
        raise DecodeError(f"too many pixels ({width}x{height} = {width * height:,} "
                          f"> {max_pixels:,})")


def _cv_reason(exc):
    msg = str(exc).strip().splitlines()
    return msg[-1][:80] if msg else "OpenCV error"


def decode_array(image, max_side: int | None = None) -> Decoded:
    """An image already decoded in memory (``skimage.io.imread``, Pillow's
    ``np.asarray(img)``, OpenCV with its channels turned to RGB) under the same policy as
    :func:`decode_gray`: BT.601 luma, then shrunk with area averaging to ``max_side``.

    ``image``: a 2-D gray array, or (h, w, 3) RGB / (h, w, 4) RGBA (alpha ignored); uint8,
    uint16 (its high byte kept, as for 16-bit files), or float with values in [0, 1].
    ``width`` and ``height`` are the array's; ``format`` is ``"array"``."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[:, :, :3]
    elif a.ndim != 2:
        raise ParameterError(f"image must be a 2-D gray array or an (h, w, 3) RGB array, got "
                             f"shape {a.shape}", "image")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ParameterError(f"image is empty (shape {a.shape})", "image")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            raise ParameterError("a float image must hold finite values in [0, 1]", "image")
        a = np.rint(a * 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ParameterError(f"image must be uint8, uint16 or float in [0, 1], got {a.dtype}",
                             "image")
    gray = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY) if a.ndim == 3 else a
    height, width = gray.shape
    tw, th = target_size(width, height, max_side)
    if gray.shape != (th, tw):
        gray = _shrink(gray, tw, th)
    return Decoded(np.ascontiguousarray(gray), int(width), int(height), "array")

"""Thumbnails: small JPEGs of store images, read from the source the store was built from.

The store does not keep pixels: a thumbnail is made on request from the image file in the
source folder recorded in the store's ``manifest.json`` (the job's source and kind), then
kept in a bounded in-memory cache. Only folder-like sources (class trees, flat folders,
train/ val/ split trees, the ILSVRC and Tiny ImageNet folder layouts) and list files can be
read this way; for archive sources, or when the source folder has moved or no longer holds
the store's images, there are no thumbnails (the API answers 404 and the page draws a
placeholder), and :attr:`SourceFiles.available` says so.

A request never names a file: it gives a key, the key is looked up in the store, and the
path is the source root joined with the key *as the store holds it*. A key that is absolute
or has a ``..`` (or empty, or ``.``) component is refused, so a path cannot climb out of the
source folder. Symbolic links below the source folder are followed wherever they point, as
the pipeline's folder walk follows them (:mod:`features.sources.folders`): a folder of links
to images elsewhere is served as it was extracted.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from threading import Lock

import cv2
import numpy as np

from ..decode import image_size, sniff_format
from ..exceptions import DecodeError, StoreError, ThumbnailError
from ..sources import key_bytes
from ..store import Manifest

# Source kinds whose keys are paths relative to a folder on disk.
_FILE_KINDS = frozenset({"tree", "flat", "list", "split-tree", "ilsvrc-train", "ilsvrc-val",
                         "tiny-imagenet", "tiny-imagenet-val", "tiny-imagenet-test"})
# Formats OpenCV decodes in color here (the same set decode_gray accepts).
_DECODED = frozenset({"jpeg", "png", "gif", "bmp", "tiff", "webp", "pnm", "jp2", "avif", "ras"})
# Larger files are not thumbnailed: a source image is read whole into memory.
MAX_FILE_BYTES = 64 * 1024 * 1024


def render_thumbnail(data: bytes, side: int, max_pixels: int, quality: int = 85) -> bytes:
    """JPEG bytes of `data` (an image file) shrunk to at most `side` pixels, in color.

    The pixel count is checked from the header before decoding; JPEGs are decoded at a
    reduced size in the DCT domain when that still leaves at least `side` pixels.
    Raises DecodeError for bytes that are not a decodable image.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise DecodeError("not an image")
    if fmt not in _DECODED:
        raise DecodeError(f"unsupported format: {fmt}")
    size = image_size(data)
    flag = cv2.IMREAD_COLOR
    if size is not None:
        w, h = size
        if w * h > max_pixels:
            raise DecodeError(f"too many pixels ({w}x{h} = {w * h:,} > {max_pixels:,})")
        if fmt == "jpeg":
            for r, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                               (2, cv2.IMREAD_REDUCED_COLOR_2)):
                if max(w, h) // r >= side:
                    flag = reduced
                    break
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise DecodeError(f"corrupt {fmt.upper()}")
    if size is None and image.shape[0] * image.shape[1] > max_pixels:
        raise DecodeError("too many pixels")
    h, w = image.shape[:2]
    scale = side / max(w, h)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    ok, out = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DecodeError("cannot encode the thumbnail")
    return out.tobytes()


class SourceFiles:
    """Resolves store keys to image files of the store's source, when it is reachable.

    `probe` is the key of one image of the store: when given, thumbnails count as available
    only if its file is found, so that a source folder emptied or replaced since extraction
    is reported at start rather than by a 404 per thumbnail.
    """

    def __init__(self, store_dir, probe: str | None = None):
        self.root: str | None = None
        # `reason` is for the operator (it names folders); clients get `public_reason`,
        # which names none: a 404 never tells where the server's files are
        self.reason = self.public_reason = ""
        try:
            job = Manifest(store_dir).data.get("job") or {}
        except StoreError as e:
            self._unavailable(str(e), "the store's manifest cannot be read")
            return
        source, kind = job.get("source", ""), job.get("kind", "")
        if not source:
            self._unavailable("the store's manifest does not record its source")
        elif kind not in _FILE_KINDS:
            self._unavailable(f"the source is a {kind or 'non-folder'} archive, not a folder")
        elif not os.path.isdir(source):
            self._unavailable(f"the source folder {source} is not reachable",
                              "the source folder is not reachable")
        else:
            self.root = os.path.abspath(source)
            if probe is not None:
                try:
                    self.path_of(probe)
                except ThumbnailError:
                    self.root = None
                    self._unavailable(f"the source folder {source} does not hold the store's "
                                      f"images (no file for {probe!r})",
                                      "the source folder does not hold the store's images")

    def _unavailable(self, reason, public=None):
        self.reason, self.public_reason = reason, public or reason

    @property
    def available(self) -> bool:
        return self.root is not None

    def path_of(self, stored_key: str) -> Path:
        """The file of a key read from the store; ThumbnailError when there is none."""
        if self.root is None:
            raise ThumbnailError(f"no thumbnails: {self.public_reason}")
        try:
            relative = key_bytes(stored_key)
        except ValueError:  # a backslash escape cut short: not a key the walk writes
            relative = b""
        parts = relative.split(b"/")
        # lexical: a link below the root may point anywhere (the walk followed it too), but
        # the key itself never climbs out of the root
        if (relative.startswith(b"/") or b"\0" in relative
                or any(p in (b"", b".", b"..") for p in parts)):
            raise ThumbnailError(f"{stored_key}: not a path inside the source folder")
        path = os.path.join(os.fsencode(self.root), relative)
        if not os.path.isfile(path):  # follows links: a link to a file counts as the file
            raise ThumbnailError(f"{stored_key}: the image file is not in the source folder")
        return Path(os.fsdecode(path))

    def read(self, stored_key: str) -> bytes:
        path = self.path_of(stored_key)
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES:
                    raise ThumbnailError(f"{stored_key}: the image file is too large")
                return f.read()
        except OSError as e:
            raise ThumbnailError(f"{stored_key}: cannot read the image file "
                                 f"({e.strerror})") from None


class LRUCache:
    """A bounded least-recently-used mapping, shared by the worker threads."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()
        self._lock = Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

"""What every source is made of: :class:`Item` (one image and its stable key),
:class:`Source` (an iterable of items), the escaping of file names into keys
(:func:`escape_key`, :func:`key_bytes`), the image extensions and the size limit, and
:func:`items_digest`, which tells whether a run of items is still what it was."""
from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from typing import Iterator

#: File name extensions (lower case) that folder walks and archives take for images.
#: HEIC is listed so that such files are reported as unsupported, not skipped.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".pgm", ".ppm", ".pbm", ".pnm", ".gif", ".jp2", ".j2k", ".avif", ".ras",
    ".heic", ".heif",
})

#: Files and archive members larger than this are refused rather than read.
MAX_ITEM_BYTES = 512 * 1024 * 1024

#: Values accepted by ``open_source(kind=...)`` besides 'auto'.
KINDS = ("tree", "flat", "list", "ilsvrc-train", "ilsvrc-val", "tar",
         "ilsvrc-train-tar", "ilsvrc-val-tar", "tiny-imagenet",
         "tiny-imagenet-val", "tiny-imagenet-test", "split-tree")


@dataclass(frozen=True)
class Item:
    """One image of a source.

    Attributes
    ----------
    key : str
        Stable id: POSIX path relative to the source root, or member path
        inside an archive.
    label : int
        Class index into ``Source.classes``; -1 if none.
    path : str or None
        File on disk, read lazily by :meth:`read`.
    data : bytes or None
        Bytes already in memory (archive members).
    error : str or None
        Set when the source itself refuses the item (unsafe archive member,
        unreadable folder, duplicate list entry): the item is a failure with
        this reason and has no bytes.
    """

    key: str
    label: int
    path: str | None = None
    data: bytes | None = None
    error: str | None = None

    def __post_init__(self):
        # Names come from the file system or an archive as given, undecodable bytes
        # included (Python's surrogateescape); the key is their documented escaping.
        object.__setattr__(self, "key", escape_key(self.key))

    def read(self) -> bytes:
        """Return the image bytes, from memory or from disk.

        Raises
        ------
        OSError
            When the file cannot be read, is larger than
            :data:`MAX_ITEM_BYTES`, or the item was refused.
        """
        if self.data is not None:
            return self.data
        if self.path is None:
            raise OSError(self.error or f"no data for {self.key}")
        # One os.read of the size and a byte more (which sees the end): a buffered file
        # object cost about 20 us more per image (its objects, a second read for the end).
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size > MAX_ITEM_BYTES:
                raise _too_large(size)
            data = os.read(fd, size + 1)
            if len(data) != size:
                # a short read (a signal, a network file system) or a file that grew since
                # fstat: read on to the end, as a file object's read() does
                data = b"".join([data, *iter(lambda: os.read(fd, 1 << 20), b"")])
                if len(data) > MAX_ITEM_BYTES:
                    raise _too_large(len(data))
            return data
        finally:
            os.close(fd)


def _too_large(size) -> OSError:
    return OSError(f"file too large ({size:,} bytes > {MAX_ITEM_BYTES:,})")


def items_digest(items, *, labels=True) -> str:
    """A digest of what a run of items is: each one's key, label and state (a file's size
    and modification time; archive bytes' length and CRC-32; a refusal's reason), in order.

    A shard built from these items is current only while this is unchanged: an image
    replaced, relabelled, removed or added inside the shard changes it, though the count
    and the first and last keys may not change. ``labels=False`` leaves the labels out:
    while that digest is unchanged the shard's features are, and a change of labels only
    needs its labels rewritten."""
    h = hashlib.sha256()
    for item in items:
        if item.error is not None:
            state = f"refused {item.error}"
        elif item.data is not None:
            state = f"bytes {len(item.data)} {zlib.crc32(item.data):08x}"
        else:
            try:
                st = os.stat(item.path)
                state = f"file {st.st_size} {st.st_mtime_ns}"
            except (OSError, TypeError, ValueError):
                state = "unreadable"
        label = item.label if labels else ""
        h.update(f"{item.key}\0{label}\0{state}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def escape_key(name: str) -> str:
    """An image's key from its path as Python gives it (bytes that are not UTF-8 appear as
    the surrogates of ``surrogateescape``).

    Keys are valid Unicode, so the store holds them as UTF-8 and JSON carries them: a byte
    0xNN that is not part of valid UTF-8 becomes the four characters ``\\xNN`` (lowercase
    hex), and a backslash in a name becomes two backslashes so that the escaping reverses
    exactly (:func:`key_bytes`). Every other name is its key unchanged.
    """
    if "\\" not in name:
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    out = []
    for ch in name:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def key_bytes(key: str) -> bytes:
    """The bytes of the path an image's key stands for: the inverse of :func:`escape_key`."""
    out = bytearray()
    i = 0
    while i < len(key):
        ch = key[i]
        if ch == "\\" and key[i + 1:i + 2] == "\\":
            out += b"\\"
            i += 2
        elif ch == "\\" and key[i + 1:i + 2] == "x":
            out.append(int(key[i + 2:i + 4], 16))
            i += 4
        elif ch == "\\" and key[i + 1:i + 2] == "u":
            out += chr(int(key[i + 2:i + 6], 16)).encode("utf-8", "surrogatepass")
            i += 6
        else:
            out += ch.encode("utf-8")
            i += 1
    return bytes(out)


def is_image_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class Source:
    """An iterable of :class:`Item`; the base of every kind of source.

    Attributes
    ----------
    root : str
        Absolute folder the keys are relative to; for lists the list file's
        folder, for archives the archive's own path.
    kind : str
        One of :data:`KINDS`.
    classes : list of str
        Label index -> class id (folder name, wnid); [] when unlabeled.
    names : list of str
        Label index -> human-readable name ('' where unknown).
    """

    def __init__(self, root, kind, classes=(), names=None):
        self.root = root
        self.kind = kind
        self.classes = [escape_key(c) for c in classes]
        self.names = list(names) if names is not None else [""] * len(self.classes)
        self._count = None

    def __iter__(self) -> Iterator[Item]:
        raise NotImplementedError

    def count(self) -> int | None:
        """Number of items, found without reading any image; None when unknown."""
        return None

    def __len__(self) -> int:
        n = self.count()
        if n is None:
            raise TypeError(f"the number of items of a {self.kind!r} source is unknown "
                            "without reading the whole archive; use count()")
        return n

    def __repr__(self):
        return (f"<{type(self).__name__} kind={self.kind!r} root={self.root!r} "
                f"classes={len(self.classes)}>")

"""Where images come from.

:func:`open_source` opens a folder, a file list or a tar archive and returns a
:class:`Source`: an iterable of :class:`Item` objects, streamed (a folder is
walked one class folder at a time, an archive is read once from start to end,
never extracted) in a deterministic order, each with a stable key.

Kinds of source (``Source.kind``), and how ``open_source(spec)`` recognizes them:

``'tree'``
    A folder whose sub-folders hold images.  The label is the first folder
    level (class names sorted, then numbered from 0); images at any depth
    below a class folder belong to it.  Every non-hidden sub-folder is a class,
    even one that holds no image, so indices do not depend on which folders are
    empty.  Images directly in the root have no class: label -1.
``'split-tree'``
    A folder whose top level is ``train/`` and ``val/`` (and/or ``test/``), each a
    tree of class folders: one source whose classes are the union of the splits'
    (sorted, or those of ``synsets=``); keys start with the split
    (``val/cat/1.png``), which the store records as ``images/split``.
``'ilsvrc-train'``
    A tree whose sub-folders are all WordNet ids (``n01440764``): the
    ILSVRC-2012 train folder ``train/<wnid>/<wnid>_<n>.JPEG`` (and the val
    folder once sorted into wnid folders).  Classes are the sorted wnids of the
    folder, or of the ``synsets=`` file when one is given (then names too).
``'flat'``
    A folder of images only: label -1, unless ``labels=`` is given.
``'ilsvrc-val'``
    A flat folder of ``ILSVRC2012_val_XXXXXXXX.JPEG``.  Labels from
    ``labels=``: the devkit's ``ILSVRC2012_validation_ground_truth.txt``
    (ILSVRC2012_IDs, mapped to wnids through the devkit's ``meta.mat``, given
    as ``synsets=`` or found next to the ground-truth file) or the
    ``LOC_val_solution.csv`` form (``ImageId,PredictionString``, the wnid is
    the first token).  Without ``labels=``: -1.
``'list'``
    A ``.txt``/``.lst`` file: one image path per line, relative to the list
    file's folder or absolute, optionally followed by a label (an integer or a
    class name) after the last tab, or else after the last run of white space
    unless that last token itself looks like an image file name (so paths with
    spaces work with a tab-separated label or no label).  Blank lines and lines
    starting with ``#`` are skipped.  Integer labels are used as they are
    (``classes`` is then ``['0', '1', ...]``); class names are numbered in
    sorted order.  A path listed twice is refused the second time.
``'tar'``, ``'ilsvrc-val-tar'``, ``'ilsvrc-train-tar'``
    A tar archive (optionally gzip/bzip2/xz compressed), read as a stream.
    ``'ilsvrc-train-tar'`` is the tar of per-synset tars of
    ``ILSVRC2012_img_train.tar``: its keys are ``<wnid>/<member>``, the keys
    the train folder gives; its classes are the sorted wnids of its synset
    tars, read from the outer headers only (or those of ``synsets=``, which a
    compressed train archive requires).  ``'ilsvrc-val-tar'`` is
    ``ILSVRC2012_img_val.tar`` (labels as for ``'ilsvrc-val'``).  A plain
    ``'tar'`` gives label -1 (or labels from ``labels=``, by file name).
    Members that are not regular files (symbolic and hard links, devices,
    FIFOs), whose names are absolute or contain ``..``, or larger than
    :data:`MAX_ITEM_BYTES` are refused: they come out as items with ``error``
    set ("refused: absolute path", ...) and are never read nor written
    anywhere.  Directories and non-image names are skipped.  A damaged
    archive ends with one item whose error starts "unreadable archive" (a
    damaged synset tar: that synset's item, then the next synset).  Archive
    order is kept (it is fixed by the archive); ``count()`` is None.
``'tiny-imagenet'``, ``'tiny-imagenet-val'``, ``'tiny-imagenet-test'``
    The Tiny ImageNet layout (``wnids.txt``, ``words.txt``,
    ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` with
    ``val/val_annotations.txt``, ``test/images/*.JPEG``).  The spec is the
    ``tiny-imagenet-200`` folder (train split) or one of its ``train``,
    ``val``, ``test`` folders.  Keys are relative to ``tiny-imagenet-200`` for
    every split (``train/n01443537/images/n01443537_0.JPEG``,
    ``val/images/val_0.JPEG``).  Classes: sorted wnids, names from words.txt.
    ``kind='tiny-imagenet'`` forces the layout; ``kind='tiny-imagenet-val'``
    (or ``-test``) with the root picks that split.

Reading the devkit's ``meta.mat`` needs SciPy (imported only then).

Folder walks take files by extension (:data:`IMAGE_EXTENSIONS`, any case) and
skip hidden entries (names starting with ``.``, such as macOS ``._x.jpg``);
decoding never trusts the extension.  Keys are POSIX paths relative to
``Source.root``.  Folder order: root images, then class folders in label order,
each one's images sorted by key.  Unreadable sub-folders come out as items
with ``error`` set.
"""
from __future__ import annotations

import array
import csv
import os
import re
import tarfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..exceptions import SourceError

__all__ = ["SourceError", "Item", "Source", "open_source", "IMAGE_EXTENSIONS",
           "MAX_ITEM_BYTES", "KINDS"]

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

_WNID = re.compile(r"n\d{8}\Z")
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.", re.IGNORECASE)
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


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
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_ITEM_BYTES:
                raise OSError(f"file too large ({size:,} bytes > {MAX_ITEM_BYTES:,})")
            return f.read()


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


def _is_image_name(name):
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


# --------------------------------------------------------------------------
# folders

def _scandir_sorted(path):
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _identity(path):
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return None


def _walk(top, prefix, seen=None):
    """(key, path, error) of the images below `top`, sorted by key.

    Follows symbolic links to folders, but never enters a folder twice (by device and
    inode; the folders in ``seen`` are not entered at all, ``top`` always): a link loop
    ends there, and a link to another class's folder or to the root adds nothing.
    """
    out = []
    seen = set() if seen is None else seen
    stack = [(top, prefix)]
    first = True
    while stack:
        path, pre = stack.pop()
        try:
            st = os.stat(path)
            ident = (st.st_dev, st.st_ino)
            if ident in seen and not first:
                continue
            first = False
            seen.add(ident)
            entries = _scandir_sorted(path)
        except OSError as exc:
            first = False
            out.append((pre, None, f"unreadable folder: {exc.strerror or exc}"))
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir():
                    stack.append((e.path, pre + e.name + "/"))
                elif _is_image_name(e.name) and e.is_file():
                    out.append((pre + e.name, e.path, None))
            except OSError:
                out.append((pre + e.name, e.path, None))  # read() will report it
    out.sort()
    return out


def _class_walks(root, class_dirs):
    """(folder, label, walk) per class folder; the root and every class folder are entered
    only as themselves (a class folder reached twice is walked once)."""
    tops = [_identity(os.path.join(root, folder)) for folder, _ in class_dirs]
    seen = {_identity(root)} | {t for t in tops if t is not None}
    entered = set()
    for (folder, label), top in zip(class_dirs, tops):
        if top is not None:
            if top in entered:
                continue
            entered.add(top)
        yield folder, label, _walk(os.path.join(root, folder), folder + "/", seen)


def _root_images(root):
    out = []
    for e in _scandir_sorted(root):
        if e.name.startswith(".") or not _is_image_name(e.name):
            continue
        try:
            if e.is_file():
                out.append(e.name)
        except OSError:
            out.append(e.name)
    return out


class FolderSource(Source):
    """A folder: 'tree' / 'ilsvrc-train' (class folders) or 'flat' / 'ilsvrc-val'."""

    def __init__(self, root, kind, classes=(), names=None, class_dirs=None,
                 file_labels=None):
        super().__init__(root, kind, classes, names)
        # (folder name, label) of the class folders, in label order
        self._class_dirs = list(class_dirs or [])
        self._file_labels = file_labels  # callable(name) -> label, flat folders

    def _items(self, with_paths=True):
        label_of = self._file_labels
        for name in _root_images(self.root):
            label = -1 if label_of is None else label_of(name)
            yield Item(name, label, os.path.join(self.root, name) if with_paths else None)
        for _, label, walk in _class_walks(self.root, self._class_dirs):
            for key, path, error in walk:
                yield Item(key, label, path, error=error)

    def __iter__(self):
        return self._items()

    def count(self):
        if self._count is None:
            self._count = sum(1 for _ in self._items(with_paths=False))
        return self._count


# --------------------------------------------------------------------------
# lists

def _split_list_line(line):
    if "\t" in line:
        path, _, label = line.rpartition("\t")
        path, label = path.strip(), label.strip()
        if path:
            return path, (label or None)
        return label, None
    parts = line.rsplit(None, 1)
    if len(parts) == 2 and not _is_image_name(parts[1]):
        return parts[0], parts[1]
    return line, None


class ListSource(Source):
    """A text file of image paths, one per line, with an optional label column."""

    def __init__(self, list_path):
        self.list_path = os.path.abspath(list_path)
        base = os.path.dirname(self.list_path)
        raw_labels = set()
        hashes = array.array("q")  # 8 bytes an entry, not a Python int each
        n = 0
        for path, label in self._entries():
            n += 1
            if label is not None:
                raw_labels.add(label)
            hashes.append(hash(self._key(base, path)))
        if n == 0:
            raise SourceError(f"list file {list_path} names no images")
        try:
            ints = sorted(int(v) for v in raw_labels)
        except ValueError:
            classes = sorted(raw_labels)
            self._label = _NameLabel(classes)
        else:
            classes = [str(i) for i in range(ints[-1] + 1)] if ints and ints[-1] >= 0 else []
            self._label = _int_label
        super().__init__(base, "list", classes)
        self._count = n
        self._dupes = self._find_duplicates(np.frombuffer(hashes, dtype=np.int64))

    def _entries(self):
        try:
            with open(self.list_path, encoding="utf-8-sig") as f:
                for line in f:
                    s = line.strip()
                    if s and not s.startswith("#"):
                        yield _split_list_line(s)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SourceError(f"cannot read list file {self.list_path}: {reason}") from None

    @staticmethod
    def _key(base, path):
        """Path relative to the list's folder when inside it, else absolute; POSIX."""
        if os.path.isabs(path):
            key = os.path.normpath(path)
            prefix = os.path.join(base, "")
            if key.startswith(prefix):
                key = key[len(prefix):]
        else:
            key = os.path.normpath(path)
            if key == os.pardir or key.startswith(os.pardir + os.sep):
                key = os.path.normpath(os.path.join(base, path))
        return key.replace(os.sep, "/")

    def _find_duplicates(self, hashes):
        """Entry indices that repeat an earlier entry's key."""
        order = np.argsort(hashes, kind="stable")
        sh = hashes[order]
        same = np.flatnonzero(sh[1:] == sh[:-1])
        if same.size == 0:
            return frozenset()
        # equal hashes: compare the keys themselves
        candidates = set(order[same].tolist()) | set(order[same + 1].tolist())
        base = self.root
        first = {}
        dupes = set()
        for i, (path, _) in enumerate(self._entries()):
            if i in candidates:
                key = self._key(base, path)
                if key in first:
                    dupes.add(i)
                else:
                    first[key] = i
        return frozenset(dupes)

    def count(self):
        return self._count

    def __iter__(self):
        base = self.root
        for i, (path, label) in enumerate(self._entries()):
            key = self._key(base, path)
            if i in self._dupes:
                yield Item(key, -1, error="refused: listed twice")
                continue
            full = path if os.path.isabs(path) else os.path.join(base, path)
            yield Item(key, self._label(label), full)


def _int_label(v):
    return -1 if v is None else max(int(v), -1)


class _NameLabel:
    """Class name -> index (a class, not a closure, so that sources pickle)."""

    def __init__(self, classes):
        self.index = {c: i for i, c in enumerate(classes)}

    def __call__(self, v):
        return -1 if v is None else self.index[v]


# --------------------------------------------------------------------------
# tar archives

def _refusal(member):
    """Reason to refuse a tar member, or None when it is a safe regular file."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "refused: absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "refused: path contains '..'"
    if member.issym():
        return "refused: symbolic link"
    if member.islnk():
        return "refused: hard link"
    if not member.isreg():
        return "refused: not a regular file"
    if member.size > MAX_ITEM_BYTES:
        return f"refused: member too large ({member.size:,} bytes)"
    return None


def _member_key(name):
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _tar_members(tf):
    """Members of a stream-mode TarFile but directories (never items), without keeping
    them all in memory."""
    while True:
        member = tf.next()
        if member is None:
            return
        # stream mode remembers every member read; at 1.28M members that adds up
        tf.members = []
        if not member.isdir():
            yield member


def _archive_error(exc):
    return f"unreadable archive: {exc or type(exc).__name__}"


class TarSource(Source):
    """A tar archive of images, read as one stream: 'tar' and 'ilsvrc-val-tar'."""

    def __init__(self, path, kind, classes=(), names=None, file_labels=None):
        super().__init__(os.path.abspath(path), kind, classes, names)
        self._file_labels = file_labels

    def __iter__(self):
        label_of = self._file_labels
        last = ""
        try:
            with tarfile.open(self.root, mode="r|*") as tf:
                for m in _tar_members(tf):
                    reason = _refusal(m)
                    if reason is not None:
                        yield Item(m.name, -1, error=reason)
                        continue
                    key = _member_key(m.name)
                    if not _is_image_name(key):
                        continue
                    data = tf.extractfile(m).read()
                    last = key
                    label = -1 if label_of is None else label_of(key.rsplit("/", 1)[-1])
                    yield Item(key, label, data=data)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            yield Item(last + "#archive-error" if last else os.path.basename(self.root),
                       -1, error=_archive_error(exc))


class TrainTarSource(Source):
    """``ILSVRC2012_img_train.tar``: a tar of one tar per synset, both streamed."""

    def __init__(self, path, classes, names=None):
        super().__init__(os.path.abspath(path), "ilsvrc-train-tar", classes, names)

    def __iter__(self):
        index = {c: i for i, c in enumerate(self.classes)}
        outer_name = os.path.basename(self.root)
        try:
            with tarfile.open(self.root, mode="r|*") as outer:
                for m in _tar_members(outer):
                    reason = _refusal(m)
                    if reason is None and not m.name.endswith(".tar"):
                        reason = "refused: not a per-synset tar (<wnid>.tar)"
                    if reason is not None:
                        yield Item(m.name, -1, error=reason)
                        continue
                    wnid = _member_key(m.name).rsplit("/", 1)[-1][:-len(".tar")]
                    yield from self._inner(outer.extractfile(m), m.name, wnid,
                                           index.get(wnid, -1))
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            yield Item(outer_name, -1, error=_archive_error(exc))

    @staticmethod
    def _inner(fileobj, inner_name, wnid, label):
        try:
            with tarfile.open(fileobj=fileobj, mode="r|*") as inner:
                for m in _tar_members(inner):
                    reason = _refusal(m)
                    if reason is not None:
                        yield Item(f"{wnid}/{m.name}", -1, error=reason)
                        continue
                    key = f"{wnid}/{_member_key(m.name)}"
                    if _is_image_name(key):
                        yield Item(key, label, data=inner.extractfile(m).read())
        except (tarfile.TarError, EOFError, ValueError) as exc:
            # the outer stream still knows where the next synset tar starts
            yield Item(inner_name, -1, error=_archive_error(exc))


def _peek_tar(path):
    """Name of the first non-directory member of a tar (None if empty)."""
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for m in _tar_members(tf):
                return m.name
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"cannot read archive {path}: {exc}") from None
    return None


def _tar_names(path):
    """Member names of an uncompressed tar from its headers (seeks over data), or None."""
    try:
        with tarfile.open(path, mode="r:") as tf:
            return [m.name for m in tf.getmembers() if not m.isdir()]
    except (tarfile.TarError, OSError, EOFError):
        return None


# --------------------------------------------------------------------------
# ImageNet label and synset files

def _read_lines(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SourceError(f"cannot read {what} {path}: {reason}") from None


def _load_meta_mat(path):
    """Leaf synsets of a devkit meta.mat: {ILSVRC2012_ID: (wnid, words)}."""
    try:
        import scipy.io
        synsets = scipy.io.loadmat(path, squeeze_me=True)["synsets"]
        out = {}
        for s in np.atleast_1d(synsets):
            if int(s["num_children"]) == 0:
                out[int(s["ILSVRC2012_ID"])] = (str(s["WNID"]), str(s["words"]))
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise SourceError(f"cannot read synsets file {path}: not a devkit meta.mat ({exc})") \
            from None
    if not out:
        raise SourceError(f"synsets file {path} holds no leaf synsets")
    return out


def _load_synsets(path):
    """(classes, names) from meta.mat or a 'wnid name...' text file; classes sorted."""
    if not os.path.isfile(path):
        raise SourceError(f"no such synsets file: {path}")
    if path.lower().endswith(".mat"):
        pairs = dict(_load_meta_mat(path).values())
    else:
        pairs = {}
        for i, line in enumerate(_read_lines(path, "synsets file"), 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            wnid, _, name = s.partition("\t") if "\t" in s else s.partition(" ")
            if not _WNID.match(wnid):
                raise SourceError(f"synsets file {path}, line {i}: expected a wnid "
                                  f"(n########) first, got {wnid!r}")
            pairs[wnid] = name.strip()
        if not pairs:
            raise SourceError(f"synsets file {path} lists no synsets")
    classes = sorted(pairs)
    return classes, [pairs[c] for c in classes]


def _load_val_labels(labels, synsets):
    """Parse a val labels file.

    Returns (by_stem: {file stem: wnid}, classes, names), or for the devkit
    ground truth (by_number: {val number: wnid}, ...) with the key 'number'.
    """
    if not os.path.isfile(labels):
        raise SourceError(f"no such labels file: {labels}")
    if labels.lower().endswith(".csv"):
        by_stem = {}
        try:
            with open(labels, newline="", encoding="utf-8") as f:
                rows = csv.reader(f)
                header = next(rows, None)
                if not header or header[0].strip() != "ImageId":
                    raise SourceError(f"labels file {labels}: expected the header "
                                      "'ImageId,PredictionString'")
                for i, row in enumerate(rows, 2):
                    if not row:
                        continue
                    tokens = row[1].split() if len(row) > 1 else []
                    if not tokens or not _WNID.match(tokens[0]):
                        raise SourceError(f"labels file {labels}, line {i}: "
                                          "no wnid in PredictionString")
                    by_stem[os.path.splitext(row[0].strip())[0]] = tokens[0]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"cannot read labels file {labels}: {exc}") from None
        if synsets:
            classes, names = _load_synsets(synsets)
        else:
            classes = sorted(set(by_stem.values()))
            names = [""] * len(classes)
        return "stem", by_stem, classes, names
    # the devkit ground truth: line i holds the ILSVRC2012_ID of val image i
    ids = []
    for i, line in enumerate(_read_lines(labels, "labels file"), 1):
        s = line.strip()
        if not s:
            continue
        try:
            ids.append(int(s))
        except ValueError:
            raise SourceError(f"labels file {labels}, line {i}: expected an ILSVRC2012_ID, "
                              f"got {s[:40]!r}") from None
    meta = synsets if synsets and synsets.lower().endswith(".mat") else \
        os.path.join(os.path.dirname(os.path.abspath(labels)), "meta.mat")
    if not os.path.isfile(meta):
        raise SourceError(f"labels file {labels} holds ILSVRC2012_IDs: give the devkit's "
                          "meta.mat as synsets= to map them to wnids")
    id_to = _load_meta_mat(meta)
    by_number = {}
    for i, sid in enumerate(ids, 1):
        if sid not in id_to:
            raise SourceError(f"labels file {labels}, line {i}: ILSVRC2012_ID {sid} "
                              f"is not a leaf synset of {meta}")
        by_number[i] = id_to[sid][0]
    if synsets:
        classes, names = _load_synsets(synsets)
    else:
        words = dict(id_to.values())
        classes = sorted(words)
        names = [words[c] for c in classes]
    return "number", by_number, classes, names


def _val_labeler(labels, synsets):
    """(label_of(file name) -> int, classes, names) for a val folder or archive."""
    mode, table, classes, names = _load_val_labels(labels, synsets)
    index = {c: i for i, c in enumerate(classes)}
    missing = sorted(set(table.values()) - set(index))
    if missing:
        raise SourceError(f"labels file {labels} names {len(missing)} wnids missing from "
                          f"the synsets file (first: {missing[0]})")
    return _Labeler({k: index[w] for k, w in table.items()}, mode), classes, names


class _Labeler:
    """Picklable file-name -> label function (sources go to worker processes)."""

    def __init__(self, table, mode):
        self.table = table
        self.mode = mode

    def __call__(self, name):
        if self.mode == "stem":
            return self.table.get(os.path.splitext(name)[0], -1)
        m = _VAL_NAME.match(name)
        return self.table.get(int(m.group(1)), -1) if m else -1


def _classes_for(found, synsets, where):
    """(classes, names) from a synsets file, checked against the wnids found."""
    if synsets is None:
        return sorted(found), None
    classes, names = _load_synsets(synsets)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise SourceError(f"{where}: {len(unknown)} folders are not synsets of {synsets} "
                          f"(first: {unknown[0]})")
    return classes, names


# --------------------------------------------------------------------------
# Tiny ImageNet

def _tiny_root(path):
    """The tiny-imagenet root for `path` (the root or its train/val/test), or None."""
    if os.path.isfile(os.path.join(path, "wnids.txt")) and \
            os.path.isdir(os.path.join(path, "train")):
        return path, "train"
    parent = os.path.dirname(path)
    split = os.path.basename(path)
    if split in ("train", "val", "test") and os.path.isfile(os.path.join(parent, "wnids.txt")):
        return parent, split
    return None


def _open_tiny(path, split):
    wnids = [s.strip() for s in _read_lines(os.path.join(path, "wnids.txt"), "wnids file")
             if s.strip()]
    classes = sorted(wnids)
    words = {}
    words_path = os.path.join(path, "words.txt")
    if os.path.isfile(words_path):
        for line in _read_lines(words_path, "words file"):
            wnid, _, name = line.partition("\t")
            words[wnid.strip()] = name.strip()
    names = [words.get(c, "") for c in classes]
    if split == "train":
        if not os.path.isdir(os.path.join(path, "train")):
            raise SourceError(f"no train folder in {path}")
        dirs = [(f"train/{c}/images", i) for i, c in enumerate(classes)]
        return _TinySource(path, "tiny-imagenet", classes, names, dirs)
    folder = os.path.join(path, split)
    if not os.path.isdir(os.path.join(folder, "images")):
        raise SourceError(f"no images folder in {folder}")
    table = {}
    if split == "val":
        ann = os.path.join(folder, "val_annotations.txt")
        if os.path.isfile(ann):
            index = {c: i for i, c in enumerate(classes)}
            for line in _read_lines(ann, "annotations file"):
                parts = line.split("\t")
                if len(parts) >= 2 and parts[1].strip() in index:
                    table[os.path.splitext(parts[0].strip())[0]] = index[parts[1].strip()]
    return _TinySource(path, f"tiny-imagenet-{split}", classes, names,
                       [(f"{split}/images", -1)], _Labeler(table, "stem"))


class _TinySource(FolderSource):
    def __init__(self, root, kind, classes, names, dirs, file_labels=None):
        super().__init__(root, kind, classes, names, dirs)
        self._file_labels = file_labels

    def _items(self, with_paths=True):
        label_of = self._file_labels
        for _, label, walk in _class_walks(self.root, self._class_dirs):
            for key, path, error in walk:
                if label_of is not None:
                    label = label_of(key.rsplit("/", 1)[-1]) if error is None else -1
                yield Item(key, label, path if with_paths else None, error=error)


# --------------------------------------------------------------------------

def _has_image_below(path):
    for _, dirnames, filenames in os.walk(path, followlinks=True):
        if any(_is_image_name(f) and not f.startswith(".") for f in filenames):
            return True
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return False


SPLITS = ("train", "val", "test")


def _subdirs(path):
    try:
        return [e.name for e in _scandir_sorted(path)
                if not e.name.startswith(".") and e.is_dir()]
    except OSError:
        return []


def _is_split_tree(root, dirs):
    """A top level of split folders only (train/ and val/ or test/), classes below train/."""
    return (bool(dirs) and set(dirs) <= set(SPLITS) and "train" in dirs and len(dirs) >= 2
            and bool(_subdirs(os.path.join(root, "train"))))


def _open_split_tree(root, spec, dirs, labels, synsets):
    """train/ val/ (test/) of class folders: one source, the classes of the union.

    Keys keep the split as their first component (``val/cat/1.png``): the store records it
    as ``images/split``.  A split folder without class folders (an unlabelled test/) gives
    unlabelled images.
    """
    if labels is not None:
        raise SourceError("labels= does not apply to a train/ val/ folder tree")
    bad = [d for d in dirs if d not in SPLITS]
    if bad:
        raise SourceError(f"{spec}: {bad[0]!r} is not a split folder (train, val, test)")
    per_split = {d: _subdirs(os.path.join(root, d)) for d in SPLITS if d in dirs}
    found = sorted(set().union(*per_split.values()))
    if not found:
        raise SourceError(f"{spec} has no class folders below its split folders")
    classes, names = _classes_for(found, synsets, spec)
    index = {c: i for i, c in enumerate(classes)}
    class_dirs = []
    for split, subdirs in per_split.items():
        if subdirs:
            class_dirs += [(f"{split}/{d}", index[d]) for d in sorted(subdirs, key=index.get)]
        else:
            class_dirs.append((split, -1))
    return FolderSource(root, "split-tree", classes, names, class_dirs=class_dirs)


def split_of(key):
    """The split of an image of a split-tree source: the first component of its key."""
    head = key.split("/", 1)[0]
    return head if head in SPLITS else ""


def _open_folder(root, spec, kind, labels, synsets):
    tiny = _tiny_root(root)
    if kind in ("tiny-imagenet", "tiny-imagenet-val", "tiny-imagenet-test") or \
            (kind == "auto" and tiny is not None):
        if tiny is None:
            raise SourceError(f"{spec} is not a Tiny ImageNet folder (no wnids.txt)")
        if labels is not None:
            raise SourceError("labels= does not apply to Tiny ImageNet (val labels are read "
                              "from val/val_annotations.txt)")
        path, split = tiny
        if kind != "auto" and kind != "tiny-imagenet" and kind != f"tiny-imagenet-{split}":
            if path == root:  # the root given with an explicit split
                split = kind.rsplit("-", 1)[1]
            else:
                raise SourceError(f"{spec} is the {split} split, not {kind!r}")
        return _open_tiny(path, split)
    try:
        entries = _scandir_sorted(root)
    except OSError as exc:
        raise SourceError(f"cannot read folder {spec}: {exc.strerror or exc}") from None

    def is_dir(e):
        try:
            return e.is_dir()
        except OSError:
            return False

    dirs = [e.name for e in entries if not e.name.startswith(".") and is_dir(e)]
    root_images = [e.name for e in entries
                   if not e.name.startswith(".") and _is_image_name(e.name) and not is_dir(e)]
    if kind == "auto":
        if _is_split_tree(root, dirs):
            kind = "split-tree"
        elif any(_has_image_below(os.path.join(root, d)) for d in dirs):
            kind = "ilsvrc-train" if all(_WNID.match(d) for d in dirs) else "tree"
        elif root_images:
            kind = "ilsvrc-val" if _VAL_NAME.match(root_images[0]) else "flat"
        else:
            raise SourceError(f"no images found in {spec}")
    if kind in ("tree", "ilsvrc-train"):
        if not dirs:
            raise SourceError(f"{spec} has no class folders")
        if labels is not None:
            raise SourceError("labels= applies to val folders and archives; "
                              "a folder tree takes its labels from its folders")
        if kind == "ilsvrc-train":
            bad = [d for d in dirs if not _WNID.match(d)]
            if bad:
                raise SourceError(f"{spec}: folder {bad[0]!r} is not a wnid (n########)")
        classes, names = _classes_for(dirs, synsets, spec)
        index = {c: i for i, c in enumerate(classes)}
        return FolderSource(root, kind, classes, names,
                            class_dirs=[(d, index[d]) for d in sorted(dirs, key=index.get)])
    if kind == "split-tree":
        return _open_split_tree(root, spec, dirs, labels, synsets)
    if kind in ("flat", "ilsvrc-val"):
        if not root_images:
            raise SourceError(f"no images found in {spec}")
        if labels is None:
            if synsets is not None:
                classes, names = _load_synsets(synsets)
                return FolderSource(root, kind, classes, names)
            return FolderSource(root, kind)
        label_of, classes, names = _val_labeler(labels, synsets)
        return FolderSource(root, kind, classes, names, file_labels=label_of)
    raise SourceError(f"kind {kind!r} does not apply to a folder ({spec})")


def _open_tar(path, spec, kind, labels, synsets):
    if kind == "auto":
        first = _peek_tar(path)
        if first is None:
            raise SourceError(f"archive {spec} is empty")
        base = _member_key(first).rsplit("/", 1)[-1]
        if base.endswith(".tar") and _WNID.match(base[:-4]):
            kind = "ilsvrc-train-tar"
        elif _VAL_NAME.match(base):
            kind = "ilsvrc-val-tar"
        else:
            kind = "tar"
    if kind == "ilsvrc-train-tar":
        if labels is not None:
            raise SourceError("labels= does not apply to the train archive "
                              "(its labels are its synset tars)")
        names = _tar_names(path)
        if names is None:
            if synsets is None:
                raise SourceError(f"{spec}: the synset list of a compressed train archive "
                                  "is unknown without reading it all; give synsets=")
            classes, cnames = _load_synsets(synsets)
        else:
            wnids = [_member_key(n).rsplit("/", 1)[-1][:-4] for n in names
                     if n.endswith(".tar")]
            wnids = [w for w in wnids if _WNID.match(w)]
            if not wnids:
                raise SourceError(f"{spec} holds no per-synset tars (<wnid>.tar)")
            classes, cnames = _classes_for(wnids, synsets, spec)
        return TrainTarSource(path, classes, cnames)
    if kind in ("tar", "ilsvrc-val-tar"):
        if labels is not None:
            label_of, classes, names = _val_labeler(labels, synsets)
            return TarSource(path, kind, classes, names, file_labels=label_of)
        if synsets is not None:
            classes, names = _load_synsets(synsets)
            return TarSource(path, kind, classes, names)
        return TarSource(path, kind)
    raise SourceError(f"kind {kind!r} does not apply to an archive ({spec})")


def open_source(spec: str, *, kind: str = "auto", labels: str | None = None,
                synsets: str | None = None) -> Source:
    """Open an image source; see the module docstring for the kinds.

    Parameters
    ----------
    spec : str or path-like
        A folder, a list file (``.txt``/``.lst``) or a tar archive.
    kind : str, optional
        'auto' (default: recognized from the spec) or one of :data:`KINDS`.
    labels : str, optional
        ILSVRC val labels: the devkit's ``ILSVRC2012_validation_ground_truth.txt``
        or a ``LOC_val_solution.csv``.
    synsets : str, optional
        The devkit's ``meta.mat`` or a synset mapping text file
        (``n01440764 tench, Tinca tinca`` lines): classes and names.

    Returns
    -------
    Source

    Raises
    ------
    SourceError
        With one clear line when the source cannot be opened.
    """
    spec = os.fspath(spec)
    if kind != "auto" and kind not in KINDS:
        raise SourceError(f"unknown source kind {kind!r} (choose from auto, {', '.join(KINDS)})")
    for what, p in (("labels", labels), ("synsets", synsets)):
        if p is not None and not os.path.isfile(p):
            raise SourceError(f"no such {what} file: {p}")
    if not os.path.exists(spec):
        raise SourceError(f"no such file or folder: {spec}")
    if os.path.isdir(spec):
        return _open_folder(os.path.abspath(spec), spec, kind, labels, synsets)
    lower = spec.lower()
    if kind == "list" or (kind == "auto" and lower.endswith((".txt", ".lst"))):
        if labels is not None or synsets is not None:
            raise SourceError("labels= and synsets= do not apply to a list file "
                              "(give the labels in its second column)")
        return ListSource(spec)
    if kind in ("tar", "ilsvrc-train-tar", "ilsvrc-val-tar") or \
            (kind == "auto" and (lower.endswith(_TAR_SUFFIXES) or _is_tarfile(spec))):
        return _open_tar(spec, spec, kind, labels, synsets)
    if kind != "auto":
        raise SourceError(f"kind {kind!r} does not apply to the file {spec}")
    raise SourceError(f"unrecognized source {spec} (expected a folder, a .txt/.lst list "
                      "or a tar archive)")


def _is_tarfile(path):
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False

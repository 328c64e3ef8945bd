"""Tar archives read as one stream, never extracted: 'tar', 'ilsvrc-val-tar', and
'ilsvrc-train-tar', the tar of per-synset tars. A member that is not a safe regular file
is refused (:func:`_refusal`), never read."""
import os
import re
import tarfile

from ..exceptions import SourceError
from .base import MAX_ITEM_BYTES, Item, Source, is_image_name

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


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


def member_key(name):
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
                    key = member_key(m.name)
                    if not is_image_name(key):
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
                    wnid = member_key(m.name).rsplit("/", 1)[-1][:-len(".tar")]
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
                    key = f"{wnid}/{member_key(m.name)}"
                    if is_image_name(key):
                        yield Item(key, label, data=inner.extractfile(m).read())
        except (tarfile.TarError, EOFError, ValueError) as exc:
            # the outer stream still knows where the next synset tar starts
            yield Item(inner_name, -1, error=_archive_error(exc))


def peek_tar(path):
    """Name of the first non-directory member of a tar (None if empty)."""
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for m in _tar_members(tf):
                return m.name
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"cannot read archive {path}: {exc}") from None
    return None


def tar_names(path):
    """Member names of an uncompressed tar from its headers (seeks over data), or None."""
    try:
        with tarfile.open(path, mode="r:") as tf:
            return [m.name for m in tf.getmembers() if not m.isdir()]
    except (tarfile.TarError, OSError, EOFError):
        return None


def is_tarfile(path):
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False

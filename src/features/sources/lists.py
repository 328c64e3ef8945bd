"""List files ('list'): one image path per line, with an optional label column.

Labels that are all integers are kept as given (class ``i`` is named ``"i"``), so the class
table has as many entries as the largest label plus one: a label above ``MAX_INT_LABEL`` is
refused rather than sizing a table of millions of classes for a typo, and so is a negative
one (an image without a label has no label column). Other labels are class names, numbered
in sorted order.
"""
import array
import os

import numpy as np

from ..exceptions import SourceError
from .base import Item, Source, is_image_name

MAX_INT_LABEL = 99_999   # ImageNet-21k's 21,841 classes fit; 30,000,000 is a typo


def _split_list_line(line):
    if "\t" in line:
        path, _, label = line.rpartition("\t")
        path, label = path.strip(), label.strip()
        if path:
            return path, (label or None)
        return label, None
    parts = line.rsplit(None, 1)
    if len(parts) == 2 and not is_image_name(parts[1]):
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
            if ints and (ints[0] < 0 or ints[-1] > MAX_INT_LABEL):
                bad = ints[0] if ints[0] < 0 else ints[-1]
                raise SourceError(f"list file {list_path}: label {bad} ({self._line_of(bad)}) "
                                  f"is not a class index in 0..{MAX_INT_LABEL}; number the "
                                  f"classes from 0, or leave an image's label out")
            classes = [str(i) for i in range(ints[-1] + 1)] if ints else []
            self._label = _int_label
        super().__init__(base, "list", classes)
        self._count = n
        self._dupes = self._find_duplicates(np.frombuffer(hashes, dtype=np.int64))

    def _line_of(self, label):
        """Where integer ``label`` first appears: "line N" of the list file."""
        with open(self.list_path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                s = line.strip()
                if s and not s.startswith("#"):
                    value = _split_list_line(s)[1]
                    if value is not None and value.lstrip("+-").isdigit() \
                            and int(value) == label:
                        return f"line {number}"
        return "in the list"

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
    return -1 if v is None else int(v)


class _NameLabel:
    """Class name -> index (a class, not a closure, so that sources pickle)."""

    def __init__(self, classes):
        self.index = {c: i for i, c in enumerate(classes)}

    def __call__(self, v):
        return -1 if v is None else self.index[v]

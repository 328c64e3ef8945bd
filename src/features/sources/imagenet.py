"""ImageNet files and layouts: WordNet ids, synset files (the devkit's ``meta.mat`` or
``wnid name`` lines), val labels (the devkit's ground truth or ``LOC_val_solution.csv``),
and the Tiny ImageNet folders.

Reading ``meta.mat`` needs SciPy, imported only then."""
import csv
import os
import re

import numpy as np

from ..exceptions import SourceError
from .base import Item
from .folders import FolderSource, class_walks

WNID = re.compile(r"n\d{8}\Z")
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.", re.IGNORECASE)


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


def load_synsets(path):
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
            if not WNID.match(wnid):
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
                    if not tokens or not WNID.match(tokens[0]):
                        raise SourceError(f"labels file {labels}, line {i}: "
                                          "no wnid in PredictionString")
                    by_stem[os.path.splitext(row[0].strip())[0]] = tokens[0]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"cannot read labels file {labels}: {exc}") from None
        if synsets:
            classes, names = load_synsets(synsets)
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
        classes, names = load_synsets(synsets)
    else:
        words = dict(id_to.values())
        classes = sorted(words)
        names = [words[c] for c in classes]
    return "number", by_number, classes, names


def val_labeler(labels, synsets):
    """(label_of(file name) -> int, classes, names) for a val folder or archive."""
    mode, table, classes, names = _load_val_labels(labels, synsets)
    index = {c: i for i, c in enumerate(classes)}
    missing = sorted(set(table.values()) - set(index))
    if missing:
        raise SourceError(f"labels file {labels} names {len(missing)} wnids missing from "
                          f"the synsets file (first: {missing[0]})")
    return (_Labeler({k: index[w] for k, w in table.items()}, mode, labels=labels), classes,
            names)


class _Labeler:
    """Picklable file-name -> label function (sources go to worker processes).

    With ``labels`` (the ground-truth file it was read from) every image must have a label
    there: an image it does not cover is a :class:`SourceError`, never a silent -1."""

    def __init__(self, table, mode, labels=None):
        self.table = table
        self.mode = mode
        self.labels = labels

    def __call__(self, name):
        label = self.label(name)
        if label < 0 and self.labels is not None:
            raise SourceError(f"labels file {self.labels} has no label for the image {name}: "
                              f"the ground truth must cover every image")
        return label

    def uncovered(self, names) -> list:
        """The file names of ``names`` the ground truth has no label for."""
        return [n for n in names if self.label(n) < 0]

    def label(self, name):
        """The label of file ``name``, -1 if the table has none."""
        if self.mode == "stem":
            return self.table.get(os.path.splitext(name)[0], -1)
        m = VAL_NAME.match(name)
        return self.table.get(int(m.group(1)), -1) if m else -1


def classes_for(found, synsets, where):
    """(classes, names) from a synsets file, checked against the wnids found."""
    if synsets is None:
        return sorted(found), None
    classes, names = load_synsets(synsets)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise SourceError(f"{where}: {len(unknown)} folders are not synsets of {synsets} "
                          f"(first: {unknown[0]})")
    return classes, names


# --------------------------------------------------------------------------
# Tiny ImageNet

def tiny_root(path):
    """The tiny-imagenet root for `path` (the root or its train/val/test), or None."""
    if os.path.isfile(os.path.join(path, "wnids.txt")) and \
            os.path.isdir(os.path.join(path, "train")):
        return path, "train"
    parent = os.path.dirname(path)
    split = os.path.basename(path)
    if split in ("train", "val", "test") and os.path.isfile(os.path.join(parent, "wnids.txt")):
        return parent, split
    return None


def open_tiny(path, split):
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
        for _, label, walk in class_walks(self.root, self._class_dirs):
            for key, path, error in walk:
                if label_of is not None:
                    label = label_of(key.rsplit("/", 1)[-1]) if error is None else -1
                yield Item(key, label, path if with_paths else None, error=error)

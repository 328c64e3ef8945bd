"""The 'split-tree' layout: ``train/`` and ``val/`` (and/or ``test/``), each a tree of
class folders, opened as one source whose keys start with their split."""
import os

from ..exceptions import SourceError
from .folders import FolderSource, scandir_sorted
from .imagenet import classes_for

SPLITS = ("train", "val", "test")


def _subdirs(path):
    try:
        return [e.name for e in scandir_sorted(path)
                if not e.name.startswith(".") and e.is_dir()]
    except OSError:
        return []


def is_split_tree(root, dirs):
    """A top level of split folders only (train/ and val/ or test/), classes below train/."""
    return (bool(dirs) and set(dirs) <= set(SPLITS) and "train" in dirs and len(dirs) >= 2
            and bool(_subdirs(os.path.join(root, "train"))))


def open_split_tree(root, spec, dirs, labels, synsets):
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
    classes, names = classes_for(found, synsets, spec)
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

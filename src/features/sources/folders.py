"""Folders of images: the walk and :class:`FolderSource`, which serves 'tree', 'flat',
'split-tree', 'ilsvrc-train' and 'ilsvrc-val'.

Symbolic links to folders are followed, but no folder is entered twice (:func:`_walk`): a
link loop, or a link to another class's folder or to the root, adds nothing."""
import os

from .base import Item, Source, is_image_name


def scandir_sorted(path):
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
            entries = scandir_sorted(path)
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
                elif is_image_name(e.name) and e.is_file():
                    out.append((pre + e.name, e.path, None))
            except OSError:
                out.append((pre + e.name, e.path, None))  # read() will report it
    out.sort()
    return out


def class_walks(root, class_dirs):
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
    for e in scandir_sorted(root):
        if e.name.startswith(".") or not is_image_name(e.name):
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
        for _, label, walk in class_walks(self.root, self._class_dirs):
            for key, path, error in walk:
                yield Item(key, label, path, error=error)

    def __iter__(self):
        return self._items()

    def count(self):
        if self._count is None:
            self._count = sum(1 for _ in self._items(with_paths=False))
        return self._count

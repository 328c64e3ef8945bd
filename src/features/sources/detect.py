""":func:`open_source`: which kind of source a spec is, and the source of that kind (the
kinds are described in :mod:`features.sources`)."""
from __future__ import annotations

import os

from ..exceptions import SourceError
from .base import KINDS, Source, is_image_name
from .folders import FolderSource, scandir_sorted
from .imagenet import (VAL_NAME, WNID, classes_for, load_synsets, open_tiny, tiny_root,
                       val_labeler)
from .lists import ListSource
from .splits import is_split_tree, open_split_tree
from .tars import (TAR_SUFFIXES, TarSource, TrainTarSource, is_tarfile, member_key, peek_tar,
                   tar_names)


def _has_image_below(path):
    for _, dirnames, filenames in os.walk(path, followlinks=True):
        if any(is_image_name(f) and not f.startswith(".") for f in filenames):
            return True
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return False


def _open_folder(root, spec, kind, labels, synsets):
    tiny = tiny_root(root)
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
        return open_tiny(path, split)
    try:
        entries = scandir_sorted(root)
    except OSError as exc:
        raise SourceError(f"cannot read folder {spec}: {exc.strerror or exc}") from None

    def is_dir(e):
        try:
            return e.is_dir()
        except OSError:
            return False

    dirs = [e.name for e in entries if not e.name.startswith(".") and is_dir(e)]
    root_images = [e.name for e in entries
                   if not e.name.startswith(".") and is_image_name(e.name) and not is_dir(e)]
    if kind == "auto":
        if is_split_tree(root, dirs):
            kind = "split-tree"
        elif any(_has_image_below(os.path.join(root, d)) for d in dirs):
            kind = "ilsvrc-train" if all(WNID.match(d) for d in dirs) else "tree"
        elif root_images:
            kind = "ilsvrc-val" if VAL_NAME.match(root_images[0]) else "flat"
        else:
            raise SourceError(f"no images found in {spec}")
    if kind in ("tree", "ilsvrc-train"):
        if not dirs:
            raise SourceError(f"{spec} has no class folders")
        if labels is not None:
            raise SourceError("labels= applies to val folders and archives; "
                              "a folder tree takes its labels from its folders")
        if kind == "ilsvrc-train":
            bad = [d for d in dirs if not WNID.match(d)]
            if bad:
                raise SourceError(f"{spec}: folder {bad[0]!r} is not a wnid (n########)")
        classes, names = classes_for(dirs, synsets, spec)
        index = {c: i for i, c in enumerate(classes)}
        return FolderSource(root, kind, classes, names,
                            class_dirs=[(d, index[d]) for d in sorted(dirs, key=index.get)])
    if kind == "split-tree":
        return open_split_tree(root, spec, dirs, labels, synsets)
    if kind in ("flat", "ilsvrc-val"):
        if not root_images:
            raise SourceError(f"no images found in {spec}")
        if labels is None:
            if synsets is not None:
                classes, names = load_synsets(synsets)
                return FolderSource(root, kind, classes, names)
            return FolderSource(root, kind)
        label_of, classes, names = val_labeler(labels, synsets)
        _check_covered(label_of, root_images, labels, spec)
        return FolderSource(root, kind, classes, names, file_labels=label_of)
    raise SourceError(f"kind {kind!r} does not apply to a folder ({spec})")


def _check_covered(label_of, names, labels, spec):
    """A ground truth that leaves images of the source without a label is refused."""
    missing = label_of.uncovered(names)
    if missing:
        raise SourceError(f"labels file {labels} covers {len(names) - len(missing)} of the "
                          f"{len(names)} images of {spec}: no label for {len(missing)} "
                          f"(first: {missing[0]})")


def _open_tar(path, spec, kind, labels, synsets):
    if kind == "auto":
        first = peek_tar(path)
        if first is None:
            raise SourceError(f"archive {spec} is empty")
        base = member_key(first).rsplit("/", 1)[-1]
        if base.endswith(".tar") and WNID.match(base[:-4]):
            kind = "ilsvrc-train-tar"
        elif VAL_NAME.match(base):
            kind = "ilsvrc-val-tar"
        else:
            kind = "tar"
    if kind == "ilsvrc-train-tar":
        if labels is not None:
            raise SourceError("labels= does not apply to the train archive "
                              "(its labels are its synset tars)")
        names = tar_names(path)
        if names is None:
            if synsets is None:
                raise SourceError(f"{spec}: the synset list of a compressed train archive "
                                  "is unknown without reading it all; give synsets=")
            classes, cnames = load_synsets(synsets)
        else:
            wnids = [member_key(n).rsplit("/", 1)[-1][:-4] for n in names
                     if n.endswith(".tar")]
            wnids = [w for w in wnids if WNID.match(w)]
            if not wnids:
                raise SourceError(f"{spec} holds no per-synset tars (<wnid>.tar)")
            classes, cnames = classes_for(wnids, synsets, spec)
        return TrainTarSource(path, classes, cnames)
    if kind in ("tar", "ilsvrc-val-tar"):
        if labels is not None:
            label_of, classes, names = val_labeler(labels, synsets)
            # an uncompressed archive lists its members without reading them; a compressed
            # one finds an image without a label when it reaches it
            members = tar_names(path)
            if members is not None:
                images = [k.rsplit("/", 1)[-1] for k in map(member_key, members)
                          if is_image_name(k)]
                _check_covered(label_of, images, labels, spec)
            return TarSource(path, kind, classes, names, file_labels=label_of)
        if synsets is not None:
            classes, names = load_synsets(synsets)
            return TarSource(path, kind, classes, names)
        return TarSource(path, kind)
    raise SourceError(f"kind {kind!r} does not apply to an archive ({spec})")


def open_source(spec: str, *, kind: str = "auto", labels: str | None = None,
                synsets: str | None = None) -> Source:
    """Open an image source; see :mod:`features.sources` for the kinds.

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
            (kind == "auto" and (lower.endswith(TAR_SUFFIXES) or is_tarfile(spec))):
        return _open_tar(spec, spec, kind, labels, synsets)
    if kind != "auto":
        raise SourceError(f"kind {kind!r} does not apply to the file {spec}")
    raise SourceError(f"unrecognized source {spec} (expected a folder, a .txt/.lst list "
                      "or a tar archive)")

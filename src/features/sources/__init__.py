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

The modules:

- :mod:`.base`: :class:`Item`, :class:`Source`, key escaping (:func:`escape_key`,
  :func:`key_bytes`), the image extensions and the size limit;
- :mod:`.folders`: the folder walk and :class:`FolderSource`;
- :mod:`.splits`: the 'split-tree' layout (:data:`SPLITS`, :func:`split_of`);
- :mod:`.lists`: list files; :mod:`.tars`: streamed tar and tar-of-tars archives;
- :mod:`.imagenet`: synset and val label files, Tiny ImageNet;
- :mod:`.detect`: :func:`open_source`, which recognizes the kind of a spec.
"""
from ..exceptions import SourceError
from .base import IMAGE_EXTENSIONS, KINDS, MAX_ITEM_BYTES, Item, Source, escape_key, key_bytes
from .detect import open_source
from .folders import FolderSource
from .lists import ListSource
from .splits import SPLITS, split_of
from .tars import TarSource, TrainTarSource

__all__ = ["SourceError", "Item", "Source", "open_source", "IMAGE_EXTENSIONS",
           "MAX_ITEM_BYTES", "KINDS", "escape_key", "key_bytes", "SPLITS", "split_of",
           "FolderSource", "ListSource", "TarSource", "TrainTarSource"]

"""HDF5 files that read nothing outside their store: :func:`open_confined`, :func:`check_confined`.

An HDF5 file can make its reader open other files: a dataset's raw data may live in
*external storage* (any file, ``/etc/passwd`` included, named in the dataset's creation
properties), a link may be an *external link* into another file, and a *virtual dataset*
maps datasets of other files. A store never needs the first two (and HDF5 resolves their
relative names from the working directory, not from the file's folder), and its virtual
datasets map its own shards (``shards/*.h5``, ``encodings/NAME/*.h5``) by paths relative to
the store. Every reader of a store's HDF5 files therefore refuses a file, with one line,
that has

- a dataset with external storage,
- an external link,
- a virtual dataset mapping a file outside the store directory (an absolute path elsewhere,
  a path that climbs out with ``..``, or a name pattern with ``%``).

The files a virtual dataset maps are checked too, since reading it reads through them: the
datasets it maps, and the links on their paths (soft links there are refused as well). Paths
are judged as written, without following symbolic links, so a store whose ``shards`` folder
is a link to another disk stays readable.

Cost: one walk over the file's links (``H5Lvisit``), opening only the datasets to read their
creation properties; then each mapped file once, its mapped datasets only. A file checked in
a process is not checked again while its size, modification time and inode (and those of
the files it maps) stay the same. Measured in CPU time on the 5-shard test store (store.h5
of 37 objects; 2 cores shared with other work): opening
:class:`~features.store.reader.Store` took 1.85 ms before the check; the check adds 9.0 ms
the first time in a process (4.0 ms for store.h5's walk, 0.8 ms for each shard it maps, so
about 1 s for the 1,281 shards of ILSVRC-2012 train), and 0.035 ms at every later opening.
"""
from __future__ import annotations

import os
import threading

import h5py
from h5py import h5d, h5f, h5l, h5o

from ..exceptions import StoreError

# files found confined in this process: (path, device, inode, size, mtime_ns) -> those of
# the files its virtual datasets map
_checked: dict[tuple, tuple] = {}
_checked_lock = threading.Lock()


def open_confined(path, root) -> h5py.File:
    """``h5py.File(path, "r")``, refused with a :class:`StoreError` (and closed) when the file
    reads anything outside the folder ``root`` (:func:`check_confined`). An ``OSError`` of
    HDF5 (not a file, damaged) propagates as from ``h5py.File``."""
    f = h5py.File(path, "r")
    try:
        check_confined(f, root, path)
    except BaseException:
        f.close()
        raise
    return f


def check_confined(h5, root, path=None) -> None:
    """Raise a :class:`StoreError` naming the object when the open HDF5 file ``h5`` (a
    ``h5py.File``) at ``path`` (its file name by default) reads anything outside the folder
    ``root``, itself or through the files its virtual datasets map."""
    path = os.path.abspath(os.fspath(path if path is not None else h5.filename))
    root = os.path.abspath(os.fspath(root))
    identity = _identity(path)
    sources = _checked.get(identity) if identity is not None else None
    if sources is not None and all(_identity(s[0]) == s for s in sources):
        return
    pending = _walk(h5.id, path, root)
    done = set()
    while pending:
        source = pending[0][0]
        names = {d for s, d in pending if s == source} - {d for s, d in done if s == source}
        pending = [(s, d) for s, d in pending if s != source]
        done |= {(source, d) for d in names}
        pending += _mapped(source, names, root)
    sources = {_identity(s) for s, _ in done}
    if identity is not None and None not in sources:       # a missing file may come later
        with _checked_lock:
            _checked[identity] = tuple(sources)


def _identity(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _walk(fid, path, root) -> list[tuple[str, str]]:
    """Walk every link of the file ``fid`` once: raise on the first object reading outside
    ``root``, return the (file, dataset) pairs its virtual datasets map."""
    mapped = []

    # the callback stops the walk by returning the problem, or the error: an exception
    # raised inside an HDF5 callback does not come out as itself
    def visit(name, info):
        try:
            if info.type == h5l.TYPE_EXTERNAL:
                return name, _external_link(fid, name)
            if info.type != h5l.TYPE_HARD:
                return None
            obj = h5o.open(fid, name)
            if isinstance(obj, h5d.DatasetID):
                return _dataset_problem(obj, name, path, root, mapped)
            return None
        except Exception as e:          # a damaged object: damage, as when it is read
            return OSError(f"{path}: {_text(name)} is unreadable ({e})")

    problem = fid.links.visit(visit, info=True)
    if isinstance(problem, OSError):
        raise problem
    if problem:
        _refuse(path, *problem)
    return mapped


def _mapped(path, datasets, root) -> list[tuple[str, str]]:
    """Check the datasets ``datasets`` of the file ``path`` that virtual datasets map, and
    the links on their paths; return what they map in turn."""
    if not datasets:
        return []
    try:
        fid = h5f.open(os.fsencode(path), h5f.ACC_RDONLY)
    except (OSError, RuntimeError):
        return []           # missing or unreadable: reading gives fill values; verify says so
    mapped = []
    try:
        for dataset in datasets:
            name = _path_links(fid, path, dataset)
            if name is None:
                continue
            obj = h5o.open(fid, name)
            if isinstance(obj, h5d.DatasetID):
                problem = _dataset_problem(obj, name, path, root, mapped)
                if problem:
                    _refuse(path, *problem)
        return mapped
    finally:
        fid.close()


def _path_links(fid, path, dataset) -> bytes | None:
    """The name of ``dataset`` in ``fid`` once every link on its path is a hard one; None if
    it is not there."""
    name = b""
    for part in dataset.encode().strip(b"/").split(b"/"):
        name = name + b"/" + part if name else part
        if not fid.links.exists(name):
            return None
        link = fid.links.get_info(name).type
        if link == h5l.TYPE_EXTERNAL:
            _refuse(path, name, _external_link(fid, name))
        if link != h5l.TYPE_HARD:
            _refuse(path, name, "is a soft link on the path a virtual dataset maps")
    return name


def _dataset_problem(obj, name, path, root, mapped):
    """What is wrong with the dataset ``obj`` named ``name`` of the file ``path`` (None if
    nothing); adds the (file, dataset) pairs of a virtual one to ``mapped``."""
    dcpl = obj.get_create_plist()
    n = dcpl.get_external_count()
    if n:
        files = ", ".join(_text(dcpl.get_external(i)[0]) for i in range(n))
        return name, f"keeps its data in external files ({files})"
    if dcpl.get_layout() != h5d.VIRTUAL:
        return None
    for i in range(dcpl.get_virtual_count()):
        given = _text(dcpl.get_virtual_filename(i))
        if given == ".":
            continue                    # the file itself, walked already
        source = os.path.normpath(os.path.join(os.path.dirname(path), given))
        if "%" in given or not _inside(source, root):
            return name, f"maps {given}, outside the store"
        mapped.append((source, _text(dcpl.get_virtual_dsetname(i))))
    return None


def _external_link(fid, name) -> str:
    target, obj = fid.links.get_val(name)
    return f"is an external link to {_text(obj)} in {_text(target)}"


def _inside(path, root) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _text(name) -> str:
    return os.fsdecode(name) if isinstance(name, bytes) else str(name)


def _refuse(path, name, what):
    raise StoreError(f"{path}: {_text(name)} {what}; a store reads only its own files, so it "
                     f"is refused")

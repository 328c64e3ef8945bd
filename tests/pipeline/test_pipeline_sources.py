"""The batch job over ILSVRC layouts: the folder and the streamed tar-of-tars give the
same store; unsafe archive members end as failed items with their reason."""
import io
import tarfile

import h5py
import numpy as np
import pytest

from features.pipeline import run
from features.sources import open_source

WNIDS = {"astronaut": "n09000001", "chelsea": "n02123045", "coins": "n03000003",
         "rocket": "n04000004"}


@pytest.fixture(scope="module")
def ilsvrc(tmp_path_factory, small_set):
    """ILSVRC-2012 train as a folder and as the original tar of per-synset tars."""
    root = tmp_path_factory.mktemp("ilsvrc")
    train = root / "train"
    outer = tarfile.open(root / "ILSVRC2012_img_train.tar", "w")
    for photo, wnid in sorted(WNIDS.items(), key=lambda kv: kv[1]):
        (train / wnid).mkdir(parents=True)
        inner_buf = io.BytesIO()
        with tarfile.open(fileobj=inner_buf, mode="w") as inner:
            for n, path in enumerate(sorted((small_set / photo).iterdir())):
                name = f"{wnid}_{n}.JPEG"
                (train / wnid / name).write_bytes(path.read_bytes())
                inner.add(train / wnid / name, arcname=name)
        info = tarfile.TarInfo(f"{wnid}.tar")
        info.size = len(inner_buf.getvalue())
        outer.addfile(info, io.BytesIO(inner_buf.getvalue()))
    outer.close()
    return root


def _store(path):
    with h5py.File(path / "store.h5", "r") as f:
        return {k: f[k][:] for k in ("images/key", "images/label", "offsets", "words",
                                     "encodings/bovw/data", "labels/wnid")}


def test_train_folder_and_train_tar_give_the_same_store(tmp_path, ilsvrc, small_config):
    folder = open_source(str(ilsvrc / "train"))
    archive = open_source(str(ilsvrc / "ILSVRC2012_img_train.tar"))
    assert (folder.kind, archive.kind) == ("ilsvrc-train", "ilsvrc-train-tar")
    run(small_config, folder, tmp_path / "a", progress=False)
    run(small_config, archive, tmp_path / "b", jobs=2, progress=False)
    a, b = _store(tmp_path / "a"), _store(tmp_path / "b")
    assert a["labels/wnid"].astype(str).tolist() == sorted(WNIDS.values())
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_refused_archive_members_are_failed_items(tmp_path, small_set, small_config):
    path = tmp_path / "images.tar"
    with tarfile.open(path, "w") as tf:
        for p in sorted((small_set / "chelsea").iterdir()):
            tf.add(p, arcname=f"chelsea/{p.name}")
        evil = tarfile.TarInfo("../escape.jpg")
        data = (small_set / "coins" / "half.jpg").read_bytes()
        evil.size = len(data)
        tf.addfile(evil, io.BytesIO(data))
        link = tarfile.TarInfo("chelsea/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    summary = run(small_config.replace(words=16), open_source(str(path)), tmp_path / "s",
                  progress=False)
    assert summary.images == 8 and summary.failed == 2
    with h5py.File(tmp_path / "s" / "store.h5", "r") as f:
        reasons = dict(zip(f["failures/key"].asstr()[:], f["failures/reason"].asstr()[:]))
    assert set(reasons) == {"../escape.jpg", "chelsea/link.jpg"}
    assert all(r.startswith("refused") for r in reasons.values())
    assert not (tmp_path / "escape.jpg").exists()

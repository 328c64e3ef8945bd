import io
import os
import pickle
import tarfile

import cv2
import numpy as np
import pytest
import scipy.io
from skimage import data as skdata

from features.decode import decode_gray
from features.sources import IMAGE_EXTENSIONS, Item, Source, open_source
from features.exceptions import SourceError

WNIDS = ["n01440764", "n01443537", "n02119789"]
WORDS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n02119789": "kit fox, Vulpes macrotis"}
# devkit ILSVRC2012_IDs are not in sorted-wnid order
DEVKIT_IDS = {"n02119789": 1, "n01440764": 2, "n01443537": 3}


def _photos():
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins"):
        img = getattr(skdata, name)()
        if img.ndim == 3:
            img = img[:, :, ::-1]
        h, w = img.shape[:2]
        s = 120 / max(h, w)
        out.append(cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA))
    return out


PHOTOS = _photos()


def _jpeg(i):
    ok, buf = cv2.imencode(".jpg", PHOTOS[i % len(PHOTOS)], [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes()


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _keys(source):
    return [item.key for item in source]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    _write(root / "dog" / "b.jpg", _jpeg(0))
    _write(root / "dog" / "a.JPG", _jpeg(1))
    _write(root / "dog" / "sub" / "deeper" / "c.png", _jpeg(2))  # a JPEG named .png
    _write(root / "cat" / "z.jpeg", _jpeg(3))
    _write(root / "cat" / "notes.txt", b"not an image")
    _write(root / "cat" / ".hidden.jpg", _jpeg(4))
    _write(root / "cat" / "._z.jpeg", b"AppleDouble junk")
    _write(root / ".git" / "x.jpg", _jpeg(4))
    _write(root / "loose.jpg", _jpeg(5))
    (root / "empty").mkdir()
    return root


def _train_folder(root, per_class=2):
    for c, wnid in enumerate(WNIDS):
        for k in range(per_class):
            _write(root / wnid / f"{wnid}_{k + 10}.JPEG", _jpeg(c * per_class + k))
    return root


def _val_folder(root, n=5):
    for i in range(1, n + 1):
        _write(root / f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(i))
    return root


VAL_WNIDS = ["n02119789", "n01440764", "n01443537", "n01440764", "n02119789"]


def _devkit(root):
    root.mkdir(parents=True, exist_ok=True)
    # leaf synsets in devkit order, plus one inner node that must be ignored
    order = sorted(WNIDS, key=DEVKIT_IDS.get)
    recs = [(DEVKIT_IDS[w], w, WORDS[w], "gloss", 0) for w in order]
    recs.append((1001, "n00001740", "entity", "gloss", 3))
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
             ("num_children", "O")]
    synsets = np.array(recs, dtype=dtype)
    scipy.io.savemat(root / "meta.mat", {"synsets": synsets})
    gt = root / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("".join(f"{DEVKIT_IDS[w]}\n" for w in VAL_WNIDS))
    return root / "meta.mat", gt


def _solution_csv(path):
    rows = ["ImageId,PredictionString"]
    for i, w in enumerate(VAL_WNIDS, 1):
        rows.append(f"ILSVRC2012_val_{i:08d},{w} 1 2 30 40 {w} 5 6 70 80 ")
    path.write_text("\n".join(rows) + "\n")
    return path


def _mapping(path):
    path.write_text("".join(f"{w} {WORDS[w]}\n" for w in sorted(WNIDS)))
    return path


def _add(tf, name, data=b"", **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data) if info.isreg() else None)


def _tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            _add(tf, name, data)
    return buf.getvalue()


# --------------------------------------------------------------------------
# folders

def test_tree(tree):
    src = open_source(tree)
    assert isinstance(src, Source)
    assert src.kind == "tree"
    assert src.root == str(tree)
    assert src.classes == ["cat", "dog", "empty"]
    assert src.names == ["", "", ""]
    items = list(src)
    assert [(i.key, i.label) for i in items] == [
        ("loose.jpg", -1), ("cat/z.jpeg", 0), ("dog/a.JPG", 1), ("dog/b.jpg", 1),
        ("dog/sub/deeper/c.png", 1)]
    assert len(src) == src.count() == 5
    for item in items:
        assert item.error is None and item.data is None
        assert item.read() == (tree / item.key).read_bytes()
    assert decode_gray(items[4].read()).format == "jpeg"


def test_tree_order_is_deterministic(tmp_path):
    names = [f"{i:03d}_{c}.jpg" for i, c in zip(range(30), "qwertyuiopasdfghjklzxcvbnmQWER")]
    for k, name in enumerate(np.random.default_rng(0).permutation(names)):
        _write(tmp_path / "t" / ("b" if k % 2 else "a") / name, _jpeg(k))
    first = _keys(open_source(tmp_path / "t"))
    assert first == _keys(open_source(tmp_path / "t"))
    assert first[:15] == sorted(first[:15]) and first[15:] == sorted(first[15:])
    assert all(k.startswith("a/") for k in first[:15])


def test_flat(tmp_path):
    _write(tmp_path / "f" / "b.png", _jpeg(0))
    _write(tmp_path / "f" / "a.jpg", _jpeg(1))
    _write(tmp_path / "f" / "readme.md", b"# hi")
    (tmp_path / "f" / "no-images-here").mkdir()
    src = open_source(tmp_path / "f")
    assert src.kind == "flat" and src.classes == [] and src.names == []
    assert [(i.key, i.label) for i in src] == [("a.jpg", -1), ("b.png", -1)]
    assert src.count() == 2


def test_extensions_any_case(tmp_path):
    assert {".jpg", ".jpeg", ".png", ".tif", ".webp", ".gif"} <= IMAGE_EXTENSIONS
    for ext in (".JPG", ".Jpeg", ".PNG", ".TIFF", ".webp", ".bmp"):
        _write(tmp_path / "f" / f"x{ext}", _jpeg(0))
    assert len(open_source(tmp_path / "f")) == 6


def test_symlink_loop_is_walked_once(tree):
    os.symlink(tree / "dog", tree / "dog" / "sub" / "loop")
    keys = _keys(open_source(tree))
    assert len(keys) == len(set(keys)) == 5


def test_ilsvrc_train_folder(tmp_path):
    root = _train_folder(tmp_path / "train")
    src = open_source(root)
    assert src.kind == "ilsvrc-train"
    assert src.classes == WNIDS and src.names == ["", "", ""]
    items = list(src)
    assert items[0].key == "n01440764/n01440764_10.JPEG" and items[0].label == 0
    assert [i.label for i in items] == [0, 0, 1, 1, 2, 2]


def test_ilsvrc_train_folder_with_synsets(tmp_path):
    root = _train_folder(tmp_path / "train")
    (root / "n01443537").rename(tmp_path / "moved")  # a subset of the classes
    for synsets in (_mapping(tmp_path / "LOC_synset_mapping.txt"), _devkit(tmp_path / "dk")[0]):
        src = open_source(root, synsets=str(synsets))
        assert src.classes == WNIDS
        assert src.names == [WORDS[w] for w in WNIDS]
        assert [i.label for i in src] == [0, 0, 2, 2]


def test_train_folder_not_in_synsets(tmp_path):
    root = _train_folder(tmp_path / "train")
    _write(root / "n09999999" / "x.JPEG", _jpeg(0))
    with pytest.raises(SourceError, match="n09999999"):
        open_source(root, synsets=str(_mapping(tmp_path / "map.txt")))


def test_ilsvrc_val_folder_unlabeled(tmp_path):
    src = open_source(_val_folder(tmp_path / "val"))
    assert src.kind == "ilsvrc-val"
    assert [i.label for i in src] == [-1] * 5
    assert _keys(src)[0] == "ILSVRC2012_val_00000001.JPEG"


def test_ilsvrc_val_folder_csv_labels(tmp_path):
    root = _val_folder(tmp_path / "val")
    csv_path = _solution_csv(tmp_path / "LOC_val_solution.csv")
    src = open_source(root, labels=str(csv_path))
    assert src.classes == WNIDS
    expected = [WNIDS.index(w) for w in VAL_WNIDS]
    assert [i.label for i in src] == expected
    src = open_source(root, labels=str(csv_path),
                      synsets=str(_mapping(tmp_path / "LOC_synset_mapping.txt")))
    assert src.names == [WORDS[w] for w in WNIDS]
    assert [i.label for i in src] == expected


def test_ilsvrc_val_folder_devkit_labels(tmp_path):
    root = _val_folder(tmp_path / "val")
    meta, gt = _devkit(tmp_path / "devkit" / "data")
    expected = [WNIDS.index(w) for w in VAL_WNIDS]  # sorted-wnid order, not devkit ids
    for synsets in (str(meta), None):  # meta.mat next to the ground truth is found
        src = open_source(root, labels=str(gt), synsets=synsets)
        assert src.classes == WNIDS
        assert src.names == [WORDS[w] for w in WNIDS]
        assert [i.label for i in src] == expected


@pytest.mark.parametrize("form", ["csv", "devkit"])
def test_val_labels_that_do_not_cover_the_images_are_refused(tmp_path, form):
    root = _val_folder(tmp_path / "val", n=7)  # the ground truth has 5 images
    if form == "csv":
        labels = _solution_csv(tmp_path / "LOC_val_solution.csv")
    else:
        _, labels = _devkit(tmp_path / "devkit" / "data")
    with pytest.raises(SourceError, match=r"covers 5 of the 7 images of .*: no label for 2 "
                                          r"\(first: ILSVRC2012_val_00000006.JPEG\)"):
        open_source(root, labels=str(labels))
    # an uncompressed archive too, from its member list
    tar_path = tmp_path / "val.tar"
    with tarfile.open(tar_path, "w") as tf:
        for f in sorted(root.iterdir()):
            tf.add(f, arcname=f.name)
    with pytest.raises(SourceError, match="covers 5 of the 7 images"):
        open_source(tar_path, labels=str(labels))
    # a compressed one when it reaches the image
    gz = tmp_path / "val.tar.gz"
    with tarfile.open(gz, "w:gz") as tf:
        for f in sorted(root.iterdir()):
            tf.add(f, arcname=f.name)
    src = open_source(gz, labels=str(labels))
    with pytest.raises(SourceError, match="no label for the image ILSVRC2012_val_00000006.JPEG"):
        list(src)


def test_devkit_labels_need_meta(tmp_path):
    root = _val_folder(tmp_path / "val")
    gt = tmp_path / "gt.txt"
    gt.write_text("1\n2\n")
    with pytest.raises(SourceError, match="meta.mat"):
        open_source(root, labels=str(gt))


@pytest.mark.parametrize("content, match", [
    ("ImageId,PredictionString\nILSVRC2012_val_00000001,\n", "no wnid"),
    ("id,label\nx,n01440764\n", "header"),
])
def test_bad_csv_labels(tmp_path, content, match):
    root = _val_folder(tmp_path / "val")
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(SourceError, match=match):
        open_source(root, labels=str(tmp_path / "bad.csv"))


# --------------------------------------------------------------------------
# lists

def test_list(tmp_path):
    _write(tmp_path / "imgs" / "a.jpg", _jpeg(0))
    _write(tmp_path / "imgs" / "my photo.jpg", _jpeg(1))
    absolute = _write(tmp_path / "elsewhere" / "c.png", _jpeg(2))
    lst = tmp_path / "lists" / "set.txt"
    lst.parent.mkdir()
    lst.write_text(f"# comment\n\n../imgs/a.jpg dog\n  ../imgs/my photo.jpg\tcat  \n"
                   f"{absolute}\n../imgs/missing.jpg dog\n")
    src = open_source(lst)
    assert src.kind == "list" and src.classes == ["cat", "dog"]
    items = list(src)
    assert [i.label for i in items] == [1, 0, -1, 1]
    # keys: relative to the list's folder when inside it, else absolute
    assert items[2].key == str(absolute).replace(os.sep, "/")
    assert items[0].key == os.path.normpath(tmp_path / "imgs" / "a.jpg").replace(os.sep, "/")
    assert items[1].key.endswith("/imgs/my photo.jpg")
    assert src.count() == 4
    assert items[1].read() == _jpeg(1)
    with pytest.raises(OSError):
        items[3].read()


def test_list_relative_keys_and_int_labels(tmp_path):
    for k in range(3):
        _write(tmp_path / "d" / f"{k}.jpg", _jpeg(k))
    lst = tmp_path / "set.lst"
    absolute = tmp_path / "d" / "1.jpg"
    lst.write_text(f"d/0.jpg 2\nd/1.jpg 0\n./d/2.jpg\nd/0.jpg 1\n{absolute}\n")
    src = open_source(lst)
    assert src.classes == ["0", "1", "2"]
    items = list(src)
    assert [i.key for i in items] == ["d/0.jpg", "d/1.jpg", "d/2.jpg", "d/0.jpg", "d/1.jpg"]
    assert [i.label for i in items[:3]] == [2, 0, -1]
    # the same image listed twice (in any spelling) is refused the second time
    assert [i.error for i in items] == [None] * 3 + ["refused: listed twice"] * 2
    assert src.count() == 5


@pytest.mark.parametrize("label,line", [("-1", 2), ("-7", 2), ("100000", 2),
                                        ("30000000", 2)])
def test_list_labels_outside_the_class_range_are_refused(tmp_path, label, line):
    """A typo must not size a class table of millions, nor a negative label vanish."""
    for k in range(3):
        _write(tmp_path / f"{k}.jpg", _jpeg(k))
    lst = tmp_path / "set.txt"
    lst.write_text(f"0.jpg\t3\n1.jpg\t{label}\n2.jpg\t99999\n")
    with pytest.raises(SourceError, match=rf"label {label} \(line {line}\) is not a class "
                                          rf"index in 0\.\.99999"):
        open_source(lst)


def test_list_largest_allowed_label(tmp_path):
    _write(tmp_path / "0.jpg", _jpeg(0))
    (tmp_path / "set.txt").write_text("0.jpg\t99999\n")
    src = open_source(tmp_path / "set.txt")
    assert len(src.classes) == 100_000 and [i.label for i in src] == [99999]


def test_list_unreadable(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00binary\x00\x81")
    with pytest.raises(SourceError, match="cannot read list file"):
        open_source(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(SourceError, match="names no images"):
        open_source(empty)


# --------------------------------------------------------------------------
# archives

def test_plain_tar(tmp_path):
    members = [("imgs/b.jpg", _jpeg(0)), ("./imgs/a.png", _jpeg(1)), ("readme.txt", b"hi")]
    path = _write(tmp_path / "set.tar", _tar_bytes(members))
    src = open_source(path)
    assert src.kind == "tar" and src.classes == []
    assert src.count() is None
    with pytest.raises(TypeError):
        len(src)
    items = list(src)
    # archive order kept, './' dropped, non-images skipped
    assert [(i.key, i.label) for i in items] == [("imgs/b.jpg", -1), ("imgs/a.png", -1)]
    assert items[0].data == _jpeg(0) and items[0].path is None
    assert items[1].read() == _jpeg(1)


def test_compressed_tar(tmp_path):
    path = tmp_path / "set.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for k in range(3):
            _add(tf, f"x/{k}.jpg", _jpeg(k))
    assert _keys(open_source(path)) == ["x/0.jpg", "x/1.jpg", "x/2.jpg"]


def test_unsafe_tar_members_are_refused(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tf:
        _add(tf, "ok/1.jpg", _jpeg(0))
        _add(tf, "/etc/abs.jpg", _jpeg(1))
        _add(tf, "ok/../../escape.jpg", _jpeg(2))
        _add(tf, "ok/link.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(tf, "ok/hard.jpg", type=tarfile.LNKTYPE, linkname="ok/1.jpg")
        _add(tf, "ok/dev.jpg", type=tarfile.CHRTYPE)
        _add(tf, "ok/fifo", type=tarfile.FIFOTYPE)
        _add(tf, "ok/dir", type=tarfile.DIRTYPE)
        _add(tf, "ok/2.jpg", _jpeg(1))
    before = set(os.listdir(tmp_path))
    items = list(open_source(path))
    assert set(os.listdir(tmp_path)) == before  # nothing written anywhere
    got = [(i.key, i.error) for i in items]
    assert got == [
        ("ok/1.jpg", None),
        ("/etc/abs.jpg", "refused: absolute path"),
        ("ok/../../escape.jpg", "refused: path contains '..'"),
        ("ok/link.jpg", "refused: symbolic link"),
        ("ok/hard.jpg", "refused: hard link"),
        ("ok/dev.jpg", "refused: not a regular file"),
        ("ok/fifo", "refused: not a regular file"),
        ("ok/2.jpg", None),
    ]
    for item in items:
        if item.error:
            assert item.label == -1 and item.data is None
            with pytest.raises(OSError):
                item.read()


def _train_tar(tmp_path, extra_inner=(), extra_outer=()):
    path = tmp_path / "ILSVRC2012_img_train.tar"
    with tarfile.open(path, "w") as outer:
        for c, wnid in enumerate(WNIDS):
            members = [(f"{wnid}_{k + 10}.JPEG", _jpeg(c * 2 + k)) for k in range(2)]
            members += [m for w, m in extra_inner if w == wnid]
            _add(outer, f"{wnid}.tar", _tar_bytes(members))
        for name, data in extra_outer:
            _add(outer, name, data)
    return path


def test_train_tar_keys_match_train_folder(tmp_path):
    tar_src = open_source(_train_tar(tmp_path))
    folder_src = open_source(_train_folder(tmp_path / "train"))
    assert tar_src.kind == "ilsvrc-train-tar"
    assert tar_src.classes == folder_src.classes == WNIDS
    assert tar_src.count() is None
    tar_items, folder_items = list(tar_src), list(folder_src)
    assert [(i.key, i.label) for i in tar_items] == [(i.key, i.label) for i in folder_items]
    assert [i.read() for i in tar_items] == [i.read() for i in folder_items]


def test_train_tar_with_synsets_and_refusals(tmp_path):
    path = _train_tar(tmp_path,
                      extra_inner=[("n01443537", ("../up.JPEG", _jpeg(0)))],
                      extra_outer=[("stray.jpg", _jpeg(1)), ("n09999999.tar", b"not a tar")])
    mapping = _mapping(tmp_path / "map.txt")
    with pytest.raises(SourceError, match="n09999999"):
        open_source(path, synsets=str(mapping))
    src = open_source(path)
    items = list(src)
    errors = {i.key: i.error for i in items if i.error}
    assert errors["n01443537/../up.JPEG"] == "refused: path contains '..'"
    assert errors["stray.jpg"].startswith("refused: not a per-synset tar")
    assert errors["n09999999.tar"].startswith("unreadable archive")
    good = [i for i in items if not i.error]
    assert len(good) == 6 and all(decode_gray(i.data).format == "jpeg" for i in good)


def test_val_tar_with_labels(tmp_path):
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 6)]
    path = _write(tmp_path / "ILSVRC2012_img_val.tar",
                  _tar_bytes([(n, _jpeg(k)) for k, n in enumerate(names)]))
    meta, gt = _devkit(tmp_path / "devkit")
    src = open_source(path, labels=str(gt), synsets=str(meta))
    assert src.kind == "ilsvrc-val-tar"
    assert _keys(src) == names == _keys(open_source(_val_folder(tmp_path / "val")))
    assert [i.label for i in src] == [WNIDS.index(w) for w in VAL_WNIDS]
    assert [i.label for i in open_source(path)] == [-1] * 5


def test_truncated_tar_reports_an_error_item(tmp_path):
    data = _tar_bytes([(f"{k}.jpg", _jpeg(k)) for k in range(4)])
    path = _write(tmp_path / "cut.tar", data[:len(data) // 2])
    items = list(open_source(path))
    assert items[-1].error and items[-1].error.startswith("unreadable archive")
    assert all(i.error is None for i in items[:-1]) and len(items) >= 2


# --------------------------------------------------------------------------
# Tiny ImageNet

@pytest.fixture
def tiny(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02119789", "n01443537"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n00001740\tentity\n" +
                                    "".join(f"{w}\t{WORDS[w]}\n" for w in WNIDS))
    for c, w in enumerate(wnids):
        for k in range(2):
            _write(root / "train" / w / "images" / f"{w}_{k}.JPEG", _jpeg(c + k))
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
    for k in range(3):
        _write(root / "val" / "images" / f"val_{k}.JPEG", _jpeg(k))
        _write(root / "test" / "images" / f"test_{k}.JPEG", _jpeg(k))
    (root / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn02119789\t0\t1\t2\t3\nval_1.JPEG\tn01443537\t0\t1\t2\t3\n")
    return root


def test_tiny_imagenet(tiny):
    classes = ["n01443537", "n02119789"]
    for spec in (tiny, tiny / "train"):
        src = open_source(spec)
        assert src.kind == "tiny-imagenet" and src.root == str(tiny)
        assert src.classes == classes
        assert src.names == [WORDS[w] for w in classes]
        assert [(i.key, i.label) for i in src][:2] == [
            ("train/n01443537/images/n01443537_0.JPEG", 0),
            ("train/n01443537/images/n01443537_1.JPEG", 0)]
        assert src.count() == 4
    val = open_source(tiny / "val")
    assert val.kind == "tiny-imagenet-val" and val.classes == classes
    assert [(i.key, i.label) for i in val] == [
        ("val/images/val_0.JPEG", 1), ("val/images/val_1.JPEG", 0), ("val/images/val_2.JPEG", -1)]
    assert [i.key for i in open_source(tiny, kind="tiny-imagenet-val")] == _keys(val)
    test = open_source(tiny / "test")
    assert test.kind == "tiny-imagenet-test" and {i.label for i in test} == {-1}


# --------------------------------------------------------------------------
# errors and plumbing

@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing", "no such file or folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no images found"),
    (lambda p: _write(p / "only" / "notes.txt", b"x").parent, "no images found"),
    (lambda p: _write(p / "x.csv", b"a,b"), "unrecognized source"),
    (lambda p: _write(p / "fake.tar", b"this is not a tar archive" * 40), "archive"),
    (lambda p: _write(p / "empty.tar", _tar_bytes([])), "empty"),
])
def test_open_errors(tmp_path, make, match):
    with pytest.raises(SourceError, match=match) as exc:
        open_source(make(tmp_path))
    assert "\n" not in str(exc.value)


def test_option_errors(tree, tmp_path):
    with pytest.raises(SourceError, match="unknown source kind"):
        open_source(tree, kind="zip")
    with pytest.raises(SourceError, match="does not apply"):
        open_source(tree, kind="list")
    with pytest.raises(SourceError, match="no such labels file"):
        open_source(tree, labels=str(tmp_path / "nope.csv"))
    with pytest.raises(SourceError, match="labels="):
        open_source(tree, labels=str(_solution_csv(tmp_path / "s.csv")))
    with pytest.raises(SourceError, match="not a wnid"):
        open_source(tree, kind="ilsvrc-train")


def test_explicit_kind_flat_on_tree(tree):
    assert _keys(open_source(tree, kind="flat")) == ["loose.jpg"]


def test_sources_pickle(tmp_path, tree):
    _val_folder(tmp_path / "val")
    for src in (open_source(tree), open_source(_val_folder(tmp_path / "val"),
                                               labels=str(_solution_csv(tmp_path / "s.csv"))),
                open_source(_train_tar(tmp_path))):
        clone = pickle.loads(pickle.dumps(src))
        assert [(i.key, i.label) for i in clone] == [(i.key, i.label) for i in src]


def test_item_read_limit(tmp_path, monkeypatch):
    import features.sources.base as base
    path = _write(tmp_path / "big.jpg", _jpeg(0))
    monkeypatch.setattr(base, "MAX_ITEM_BYTES", 100)
    with pytest.raises(OSError, match="too large"):
        Item("big.jpg", -1, str(path)).read()
    assert Item("m", 3, data=b"abc").read() == b"abc"


def test_item_read_short_reads_and_growth(tmp_path, monkeypatch):
    """A file is read to its end whatever os.read gives at a time (network file systems
    give short reads), also when it has grown since its size was taken."""
    payload = bytes(range(256)) * 40 + b"end"
    path = _write(tmp_path / "a.jpg", payload)
    assert Item("a.jpg", -1, str(path)).read() == payload
    assert Item("e.jpg", -1, str(_write(tmp_path / "e.jpg", b""))).read() == b""
    real_read, real_fstat = os.read, os.fstat
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, 1000)))
    assert Item("a.jpg", -1, str(path)).read() == payload
    monkeypatch.setattr(os, "read", real_read)

    class Shrunk:        # the size the file had before it grew
        st_size = 100

    monkeypatch.setattr(os, "fstat", lambda fd: Shrunk)
    assert Item("a.jpg", -1, str(path)).read() == payload
    import features.sources.base as base
    monkeypatch.setattr(base, "MAX_ITEM_BYTES", 5000)
    with pytest.raises(OSError, match="too large"):
        Item("a.jpg", -1, str(path)).read()
    monkeypatch.setattr(os, "fstat", real_fstat)
    with pytest.raises(IsADirectoryError):
        Item("d", -1, str(tmp_path)).read()


def test_unreadable_folder_is_reported(tree, monkeypatch):
    import features.sources.folders as folders
    real = folders.scandir_sorted

    def scandir(path):
        if os.path.basename(path) == "sub":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(folders, "scandir_sorted", scandir)
    src = open_source(tree)
    items = list(src)
    bad = [i for i in items if i.error]
    assert [(i.key, i.error) for i in bad] == [("dog/sub/", "unreadable folder: Permission denied")]
    assert bad[0].label == 1
    assert src.count() == len(items) == 5

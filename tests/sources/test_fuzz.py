"""Property-based fuzzing (hypothesis) of the decoder and the source readers: whatever the
bytes or names, no exception but the documented ones escapes, no example takes more than a
bounded time, and decoded images stay within the pixel limit (bounded memory).

The example counts keep the whole module near 30 s on an idle 2-core machine.
"""
import io
import os
import tarfile

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.exceptions import DecodeError
from features.decode import decode_gray
from features.exceptions import SourceError
from features.sources import key_bytes, open_source

FUZZ = settings(deadline=3000, max_examples=120, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
# the readers touch the file system: fewer examples
FUZZ_FILES = settings(FUZZ, max_examples=40)


def _seeds():
    rng = np.random.default_rng(1)
    img = (rng.random((24, 32)) * 255).astype(np.uint8)
    color = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    out = {}
    for ext in (".jpg", ".png", ".webp"):
        ok, buf = cv2.imencode(ext, color)
        assert ok
        out[ext] = buf.tobytes()
    from PIL import Image
    frames = [Image.fromarray(img), Image.fromarray(255 - img)]
    b = io.BytesIO()
    frames[0].save(b, format="GIF", save_all=True, append_images=frames[1:])
    out[".gif"] = b.getvalue()
    return out


SEEDS = _seeds()
MAX_PIXELS = 1 << 20


@st.composite
def mutated(draw):
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "size"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        elif op == "truncate":
            del data[i:]
        elif op == "size" and len(data) > 40:
            # large dimensions in the header region: the pixel limit must hold
            j = draw(st.integers(0, 40))
            data[j:j + 2] = b"\xff\xff"
    return bytes(data)


@FUZZ
@given(data=mutated(), max_side=st.sampled_from([None, 16, 300]))
def test_decoder_never_raises_anything_else(data, max_side):
    try:
        d = decode_gray(data, max_side, max_pixels=MAX_PIXELS)
    except DecodeError:
        return
    assert d.gray.dtype == np.uint8 and d.gray.ndim == 2
    assert d.width * d.height <= MAX_PIXELS
    if max_side:
        assert max(d.gray.shape) <= max_side


@FUZZ
@given(data=st.binary(max_size=256))
def test_decoder_on_random_bytes(data):
    try:
        decode_gray(data, 64, max_pixels=MAX_PIXELS)
    except DecodeError:
        pass


NAME = st.one_of(
    st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
            min_size=1, max_size=12),
    st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\x00" not in b)
    .map(os.fsdecode),
).filter(lambda n: n not in (".", ".."))


def _consume(source):
    items = list(source)
    for it in items:
        it.key.encode("utf-8")            # keys are valid Unicode
        assert isinstance(it.label, int)
    return items


@FUZZ_FILES
@given(classes=st.lists(NAME, min_size=1, max_size=3, unique=True),
       files=st.lists(st.tuples(st.integers(0, 2), NAME, st.sampled_from([".jpg", ".png",
                                                                          ".txt", ""])),
                      max_size=6))
def test_folder_reader(tmp_path_factory, classes, files):
    root = tmp_path_factory.mktemp("fuzzdir")
    made = set()
    for c in classes:
        try:
            os.mkdir(os.path.join(root, c))
        except OSError:
            continue
        made.add(c)
    for k, name, ext in files:
        folder = classes[k % len(classes)]
        if folder not in made:
            continue
        try:
            with open(os.path.join(root, folder, name + ext), "wb") as f:
                f.write(SEEDS[".png"])
        except OSError:
            pass
    try:
        source = open_source(str(root))
    except SourceError:
        return
    items = _consume(source)
    assert len({it.key for it in items}) == len(items)
    for it in items:
        assert os.path.exists(os.fsencode(root) + b"/" + key_bytes(it.key))


@FUZZ_FILES
@given(lines=st.lists(st.one_of(NAME, st.text(max_size=20)), max_size=8))
def test_list_reader(tmp_path_factory, lines):
    root = tmp_path_factory.mktemp("fuzzlist")
    (root / "a.jpg").write_bytes(SEEDS[".jpg"])
    listing = root / "images.txt"
    listing.write_bytes("\n".join(["a.jpg"] + lines).encode("utf-8", "surrogateescape"))
    try:
        source = open_source(str(listing))
    except SourceError:
        return
    _consume(source)


MEMBER = st.tuples(st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo"]),
                   st.one_of(NAME, st.sampled_from(["../evil.jpg", "/abs.jpg", "a/../../b.jpg",
                                                    "ok/x.jpg", "./y.png"])),
                   st.binary(max_size=64) | st.just(SEEDS[".jpg"]))


@FUZZ_FILES
@given(members=st.lists(MEMBER, max_size=6), cut=st.integers(0, 4096))
def test_tar_reader(tmp_path_factory, members, cut):
    root = tmp_path_factory.mktemp("fuzztar")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, data in members:
            name = name + (".jpg" if kind == "file" and "." not in name else "")
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = "../../etc/passwd"
            tf.addfile(info)
    raw = buf.getvalue()
    if cut:
        raw = raw[:max(len(raw) - cut, 0)]
    path = root / "archive.tar"
    path.write_bytes(raw)
    try:
        source = open_source(str(path), kind="tar")
    except SourceError:
        return
    for it in _consume(source):
        if it.error is None:              # refused members keep their name, and no bytes
            assert not it.key.startswith("/") and ".." not in it.key.split("/")
            assert it.data is not None
        else:
            assert it.data is None
    assert not list(root.glob("**/passwd")) and not (root.parent / "evil.jpg").exists()

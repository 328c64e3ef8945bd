"""Names as a hostile user makes them: bytes that are not UTF-8, tabs and newlines,
symbolic-link loops."""
import csv
import io
import os
import shutil

import h5py
import pytest

from conftest import run_cli
from features.sources import escape_key, key_bytes, open_source

ARGS = ["--words", 8, "--max-side", 120, "--failure-budget", 1, "-q"]


@pytest.mark.parametrize("raw", [b"plain.jpg", b"caf\xc3\xa9.jpg", b"latin1-\xe9t\xe9.jpg",
                                 b"\xff\xfe.jpg", b"back\\slash\\x41.jpg", b"tab\there.jpg",
                                 b"\xed\xa0\x80.jpg"])
def test_key_escaping_reverses(raw):
    key = escape_key(os.fsdecode(raw))
    key.encode("utf-8")                         # always valid Unicode
    assert key_bytes(key) == raw
    if raw.decode("utf-8", "replace") == raw.decode("utf-8", "ignore") and b"\\" not in raw:
        assert key == raw.decode("utf-8")       # valid names are their own key


def _two_class_tree(tmp_path, small_set):
    src = tmp_path / "src"
    for cls in ("coins", "rocket"):
        shutil.copytree(small_set / cls, src / cls)
    return src


def test_undecodable_file_names_finish_the_job(tmp_path, small_set, cli_env):
    src = _two_class_tree(tmp_path, small_set)
    bad = os.fsencode(src / "coins") + b"/\xff\xfeweird-\xe9.jpg"
    shutil.copy(src / "coins" / "half.jpg", bad)
    broken = os.fsencode(src / "rocket") + b"/broken-\xff\ttab\nnewline.jpg"
    with open(broken, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "store"
    proc = run_cli("run", src, "-o", out, *ARGS, env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "14 images, 1 failed" in proc.stdout
    with h5py.File(out / "store.h5", "r") as f:
        keys = list(f["images/key"].asstr()[:])
        status = f["images/status"][:]
    weird = "coins/\\xff\\xfeweird-\\xe9.jpg"
    assert weird in keys and status[keys.index(weird)] == 0
    assert key_bytes(weird) == b"coins/\xff\xfeweird-\xe9.jpg"
    broken_key = "rocket/broken-\\xff\ttab\nnewline.jpg"
    assert status[keys.index(broken_key)] != 0
    # failures.tsv reads back with the csv module whatever the names hold
    with open(out / "failures.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["index", "key", "reason"] and len(rows) == 2
    assert rows[1][1] == broken_key and int(rows[1][0]) == keys.index(broken_key)
    # the key is a query
    proc = run_cli("search", out, weird, "-k", 2, "--json", env=cli_env)
    assert proc.returncode == 0, proc.stderr


def test_symlink_loop_is_entered_once(tmp_path, small_set):
    src = _two_class_tree(tmp_path, small_set)
    os.symlink("..", src / "coins" / "loop")            # cls/loop -> the root
    os.symlink("../rocket", src / "coins" / "other")    # into another class
    os.symlink(".", src / "rocket" / "self")            # a folder into itself
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(small_set / "chelsea" / "half.jpg", outside / "cat.jpg")
    os.symlink(outside / "cat.jpg", src / "rocket" / "farm.jpg")   # a file outside the root
    items = list(open_source(str(src)))
    keys = [it.key for it in items]
    assert len(keys) == len(set(keys)) == 13
    labels = {it.key: it.label for it in items}
    assert all(labels[k] == 0 for k in keys if k.startswith("coins/"))
    assert all(labels[k] == 1 for k in keys if k.startswith("rocket/"))
    assert "rocket/farm.jpg" in keys
    assert open_source(str(src)).count() == 13


def test_failures_tsv_quotes_tabs_and_newlines(tmp_path):
    from features.pipeline.steps import _write_failure_report
    failures = [(0, "a\tb.jpg", "bad\nreason"), (3, 'q"uote.jpg', "tab\there"),
                (5, "plain.jpg", "undecodable")]
    _write_failure_report(tmp_path, failures)
    text = (tmp_path / "failures.tsv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))
    assert rows[1:] == [[str(i), k, r] for i, k, r in failures]
    assert text.splitlines()[-1] == "5\tplain.jpg\tundecodable"   # plain rows stay plain

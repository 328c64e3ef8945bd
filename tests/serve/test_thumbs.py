"""Which files the server's thumbnails may read: keys resolved against the store's source
folder, links followed as the pipeline's folder walk follows them, no climbing out by key."""
from __future__ import annotations

import json

import pytest

from features.exceptions import ThumbnailError
from features.serve.thumbs import SourceFiles
from features.store.layout import FORMAT, MANIFEST_FILE


def _store(tmp_path, source, kind):
    store = tmp_path / "store"
    store.mkdir()
    (store / MANIFEST_FILE).write_text(json.dumps(
        {"format": FORMAT, "config": None, "steps": {}, "shards": {},
         "job": {"source": str(source), "kind": kind}}))
    return store


@pytest.fixture
def folder(tmp_path):
    """root/ (the source) with a file, a link to a file outside, a link to a folder outside,
    and a secret beside the root."""
    outside = tmp_path / "elsewhere"
    (outside / "birds").mkdir(parents=True)
    (outside / "cat.jpg").write_bytes(b"cat")
    (outside / "birds" / "owl.jpg").write_bytes(b"owl")
    root = tmp_path / "root"
    (root / "val" / "cats").mkdir(parents=True)
    (root / "val" / "cats" / "own.jpg").write_bytes(b"own")
    (root / "val" / "cats" / "linked.jpg").symlink_to(outside / "cat.jpg")
    (root / "val" / "birds").symlink_to(outside / "birds")
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    return root


def test_split_tree_and_links_are_served(tmp_path, folder):
    files = SourceFiles(_store(tmp_path, folder, "split-tree"), probe="val/cats/own.jpg")
    assert files.available, files.reason
    assert files.read("val/cats/own.jpg") == b"own"
    # links below the root are followed wherever they point, as the folder walk does
    assert files.read("val/cats/linked.jpg") == b"cat"
    assert files.read("val/birds/owl.jpg") == b"owl"


@pytest.mark.parametrize("key", [
    "../secret.jpg", "val/../../secret.jpg", "val/cats/../../../secret.jpg", "/etc/passwd",
    "val//cats/own.jpg", "./val/cats/own.jpg", "val/cats", "val/cats/missing.jpg",
    "val/cats/own.jpg\x00", "\\x2e\\x2e/secret.jpg", ""])
def test_keys_that_leave_the_folder_or_name_no_file_are_refused(tmp_path, folder, key):
    files = SourceFiles(_store(tmp_path, folder, "tree"))
    with pytest.raises(ThumbnailError):
        files.path_of(key)


def test_availability_is_the_truth(tmp_path, folder):
    # an archive source: no thumbnails, and why
    tar = SourceFiles(_store(tmp_path, folder, "tar"))
    assert not tar.available and "archive" in tar.reason
    # a folder that is there but no longer holds the store's images
    (tmp_path / "store" / MANIFEST_FILE).unlink()
    (tmp_path / "store").rmdir()
    gone = SourceFiles(_store(tmp_path, folder, "tree"), probe="train/dogs/1.jpg")
    assert not gone.available and "train/dogs/1.jpg" in gone.reason
    with pytest.raises(ThumbnailError, match="no thumbnails"):
        gone.read("val/cats/own.jpg")

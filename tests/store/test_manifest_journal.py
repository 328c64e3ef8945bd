"""Finished shards go to the manifest's journal: a line each, never the whole manifest
rewritten per shard (which grows as the square of the shards)."""
import json

import pytest

from features.exceptions import StoreError
from features.store import Manifest
from features.store.layout import JOURNAL_FILE, MANIFEST_FILE


def _record(number):
    return {"file": f"shard-{number:06d}.h5", "first": number * 10, "count": 10, "failed": 0,
            "checksum": "0" * 64, "size": 1234}


def _started(tmp_path, small_config):
    m = Manifest(tmp_path)
    m.check_config(small_config)
    return m


def test_a_shard_appends_one_line_and_never_rewrites_the_manifest(tmp_path, small_config,
                                                                  monkeypatch):
    m = _started(tmp_path, small_config)
    saves = []
    monkeypatch.setattr(Manifest, "save", lambda self: saves.append(1))
    before = (tmp_path / MANIFEST_FILE).read_bytes()
    sizes = []
    for n in range(200):
        m.shard_done(n, _record(n))
        sizes.append((tmp_path / JOURNAL_FILE).stat().st_size)
    assert saves == []
    assert (tmp_path / MANIFEST_FILE).read_bytes() == before
    # each shard costs the same bytes whatever came before (but for the digits of its number)
    steps = [b - a for a, b in zip(sizes, sizes[1:])]
    assert max(steps) <= min(steps) + 8
    assert len((tmp_path / JOURNAL_FILE).read_text().splitlines()) == 200


def test_a_reader_replays_the_journal_and_a_rewrite_folds_it_in(tmp_path, small_config):
    m = _started(tmp_path, small_config)
    for n in range(3):
        m.shard_done(n, _record(n))
    assert Manifest(tmp_path).data["shards"] == {str(n): _record(n) for n in range(3)}
    m.step_done("encode", images=30)
    assert not (tmp_path / JOURNAL_FILE).exists()
    on_disk = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert on_disk["shards"] == {str(n): _record(n) for n in range(3)}
    assert Manifest(tmp_path).data["shards"] == on_disk["shards"]


def test_lines_a_rewrite_already_holds_are_not_replayed_over_later_changes(tmp_path,
                                                                           small_config):
    m = _started(tmp_path, small_config)
    for n in range(4):
        m.shard_done(n, _record(n))
    journal = (tmp_path / JOURNAL_FILE).read_bytes()
    m.drop_shards_from(2)                         # rewrites the manifest, journal removed
    # a crash between the rewrite and the journal's removal leaves the old lines
    (tmp_path / JOURNAL_FILE).write_bytes(journal)
    assert sorted(Manifest(tmp_path).data["shards"]) == ["0", "1"]


def test_a_last_line_cut_short_is_ignored_and_never_appended_to(tmp_path, small_config):
    m = _started(tmp_path, small_config)
    for n in range(3):
        m.shard_done(n, _record(n))
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(path.read_bytes()[:-20])     # the crash cut the third line
    m = Manifest(tmp_path)
    assert sorted(m.data["shards"]) == ["0", "1"]
    m.shard_done(2, _record(2))                   # the rerun computes it again
    m.shard_done(3, _record(3))
    assert sorted(Manifest(tmp_path).data["shards"]) == ["0", "1", "2", "3"]


def test_a_damaged_line_before_the_last_is_refused(tmp_path, small_config):
    m = _started(tmp_path, small_config)
    for n in range(3):
        m.shard_done(n, _record(n))
    path = tmp_path / JOURNAL_FILE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "{oops\n" + lines[2])
    with pytest.raises(StoreError, match="damaged line 2"):
        Manifest(tmp_path)


def test_an_aggregate_run_journals_its_shards_under_its_record(tmp_path, small_config):
    m = _started(tmp_path, small_config)
    m.data.setdefault("aggregate", {})["vlad"] = {"state": "running", "shards": {}}
    m.save()
    m.shard_done(5, _record(5), encoding="vlad")
    assert Manifest(tmp_path).data["aggregate"]["vlad"]["shards"] == {"5": _record(5)}


def test_a_last_line_without_its_newline_is_cut_short_even_if_it_parses(tmp_path,
                                                                        small_config):
    m = _started(tmp_path, small_config)
    for n in range(3):
        m.shard_done(n, _record(n))
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(path.read_bytes()[:-1])      # the newline did not reach the file
    m = Manifest(tmp_path)
    assert sorted(m.data["shards"]) == ["0", "1"]
    m.shard_done(2, _record(2))                   # folds first: nothing is appended to it
    m.shard_done(3, _record(3))
    assert sorted(Manifest(tmp_path).data["shards"]) == ["0", "1", "2", "3"]


def test_two_objects_rewriting_in_turn_never_revive_folded_lines(tmp_path, small_config):
    a = _started(tmp_path, small_config)
    for n in range(3):
        a.shard_done(n, _record(n))
    b = Manifest(tmp_path)                        # loaded from the same rewrite as a
    b.drop_shards_from(1)                         # b's rewrite, then a line after it
    b.shard_done(1, dict(_record(1), checksum="1" * 64))
    journal = (tmp_path / JOURNAL_FILE).read_bytes()
    a.step_done("encode", images=30)              # a's rewrite: the last word ...
    (tmp_path / JOURNAL_FILE).write_bytes(journal)  # ... but a crash came before the unlink
    # b's line follows b's rewrite, not a's, though each made as many rewrites
    assert Manifest(tmp_path).data["shards"] == {str(n): _record(n) for n in range(3)}


def test_a_journal_that_is_not_text_is_refused_in_one_line(tmp_path, small_config):
    _started(tmp_path, small_config)
    (tmp_path / JOURNAL_FILE).write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(StoreError, match="unreadable journal"):
        Manifest(tmp_path)

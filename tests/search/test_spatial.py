"""Geometric verification: the geometry record, the kernel on known transforms, and
re-ranking through the store (fast record reads, and the fallback for stores without
records)."""
import h5py
import numpy as np
import pytest

from features.search import MIN_INLIERS, Searcher
from features.store import Store
from features.exceptions import StoreError
from features.search.spatial import VerifyParams, transform_matrix, verify_many, verify_pair
from features.extract.geometry import frame_geometry, pack_geometry, unpack_geometry


def _frames(rng, n, width, height):
    return np.column_stack([rng.uniform(0, width, n), rng.uniform(0, height, n),
                            rng.uniform(1.5, 80, n), rng.uniform(0, 2 * np.pi, n)]
                           ).astype(np.float32)


@pytest.mark.parametrize("units", ["pixels", "normalized"])
@pytest.mark.parametrize("n_words", [1000, 70000])
def test_geometry_record_round_trip(units, n_words):
    rng = np.random.default_rng(0)
    width, height = 640, 427
    frames = _frames(rng, 500, width, height)
    words = rng.integers(0, n_words, 500)
    stored = frames.copy()
    if units == "normalized":
        stored[:, 0] /= width
        stored[:, 1] /= height
        stored[:, 2] /= width
    record = pack_geometry(stored, words, width, height, units=units, n_words=n_words)
    assert record.dtype == (np.uint16 if n_words <= 65536 else np.uint32)
    assert record.shape == (500, 5)
    got_words, geom = unpack_geometry(record, width, height)
    order = np.argsort(words, kind="stable")
    np.testing.assert_array_equal(got_words, words[order])
    assert (np.diff(got_words) >= 0).all()
    f = frames[order]
    np.testing.assert_allclose(geom[:, 0], f[:, 0], atol=0.01)
    np.testing.assert_allclose(geom[:, 1], f[:, 1], atol=0.01)
    np.testing.assert_allclose(geom[:, 2], np.log2(f[:, 2]), atol=1e-3)
    diff = np.angle(np.exp(1j * (geom[:, 3] - f[:, 3])))
    assert np.abs(diff).max() < 1e-3
    # the unquantized path gives the same features
    w2, g2 = frame_geometry(stored, words, width, height, units=units)
    np.testing.assert_array_equal(w2, got_words)
    np.testing.assert_allclose(g2[:, :3], geom[:, :3], atol=0.01)


def test_geometry_record_refuses_bad_input():
    frames = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="words must lie"):
        pack_geometry(frames, [0, 1, 1000], 10, 10, n_words=1000)
    with pytest.raises(ValueError, match="width and height"):
        pack_geometry(frames, [0, 1, 2], 0, 10)
    with pytest.raises(ValueError, match="n x 4"):
        pack_geometry(frames[:, :3], [0, 1, 2], 10, 10)
    with pytest.raises(ValueError, match="units"):
        pack_geometry(frames, [0, 1, 2], 10, 10, units="inches")


def _similar_pair(rng, scale, angle, n_true, n_noise, n_words=1000, width=640, height=480):
    """A query and a candidate whose first n_true features are the query's under a known
    similarity (with keypoint noise), plus unrelated features in both."""
    q = _frames(rng, n_true + n_noise, width, height)
    a, b = scale * np.cos(angle), scale * np.sin(angle)
    t = np.array([120.0, -40.0])
    c = _frames(rng, n_true + n_noise, width, height)
    xy = q[:n_true, :2] @ np.array([[a, b], [-b, a]]) + t
    c[:n_true, :2] = xy + rng.normal(0, 0.5, (n_true, 2))
    c[:n_true, 2] = q[:n_true, 2] * scale * rng.uniform(0.9, 1.1, n_true)
    c[:n_true, 3] = np.mod(q[:n_true, 3] + angle + rng.normal(0, 0.05, n_true), 2 * np.pi)
    qw = rng.integers(0, n_words, n_true + n_noise)
    cw = rng.integers(0, n_words, n_true + n_noise)
    cw[:n_true] = qw[:n_true]
    side = max(width, height) * max(scale, 1)
    return (frame_geometry(q, qw, width, height), frame_geometry(c, cw, width, height),
            (a, b, t), side)


@pytest.mark.parametrize("scale,angle", [(1.0, 0.0), (0.5, 0.2), (2.0, -0.7), (0.25, np.pi),
                                         (1.3, 2.5)])
def test_verification_recovers_a_known_similarity(scale, angle):
    rng = np.random.default_rng(1)
    (qw, qg), (cw, cg), (a, b, t), side = _similar_pair(rng, scale, angle, 150, 600)
    rows_q, rows_c, transform = verify_pair(qw, qg, cw, cg, side)
    assert 140 <= len(rows_q) <= 160
    np.testing.assert_allclose(transform[:2], [a, b], atol=0.01 * scale)
    np.testing.assert_allclose(transform[2:], t, atol=2.0)
    # the pairs it returns are mapped onto each other by the transform
    m = transform_matrix(transform)
    mapped = qg[rows_q, :2] @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - cg[rows_c, :2]).max() <= 0.02 * side
    # one to one
    assert len(set(rows_q.tolist())) == len(rows_q) == len(set(rows_c.tolist()))


def test_unrelated_images_get_few_inliers():
    rng = np.random.default_rng(2)
    (qw, qg), _, _, _ = _similar_pair(rng, 1.0, 0.0, 0, 1500)
    cands = [frame_geometry(_frames(rng, 1500, 640, 480), rng.integers(0, 1000, 1500), 640, 480)
             for _ in range(20)]
    words = np.concatenate([c[0] for c in cands])
    geom = np.concatenate([c[1] for c in cands])
    offsets = np.arange(21) * 1500
    inliers, _ = verify_many(qw, qg, words, geom, offsets, np.full(20, 640.0))
    assert inliers.max() < MIN_INLIERS


def test_verify_many_agrees_with_verify_pair_and_handles_empty_candidates():
    rng = np.random.default_rng(3)
    parts, expected = [], []
    (qw, qg), _, _, _ = _similar_pair(rng, 1.0, 0.0, 0, 400)
    for k, (scale, angle, n_true) in enumerate([(1.0, 0.1, 80), (0.7, 1.0, 30), (1, 0, 0),
                                                (2.0, -2.0, 50)]):
        # candidates share the query's features under a transform, except the empty one
        c = _frames(rng, 300, 640, 480)
        cw = rng.integers(0, 1000, 300)
        if n_true:
            sel = rng.choice(400, n_true, replace=False)
            a, b = scale * np.cos(angle), scale * np.sin(angle)
            c[:n_true, :2] = qg[sel, :2] @ np.array([[a, b], [-b, a]]) + 30
            c[:n_true, 2] = 2.0 ** qg[sel, 2] * scale
            c[:n_true, 3] = np.mod(qg[sel, 3] + angle, 2 * np.pi)
            cw[:n_true] = qw[sel]
        else:
            c, cw = c[:0], cw[:0]
        parts.append(frame_geometry(c, cw, 640, 480))
        expected.append(len(verify_pair(qw, qg, *parts[-1], 1280)[0]))
    words = np.concatenate([p[0] for p in parts])
    geom = np.concatenate([p[1] for p in parts])
    offsets = np.concatenate([[0], np.cumsum([len(p[0]) for p in parts])])
    inliers, transforms = verify_many(qw, qg, words, geom, offsets, np.full(4, 1280.0))
    assert inliers.tolist() == expected
    assert expected[0] >= 70 and expected[1] >= 25 and expected[2] == 0 and expected[3] >= 40
    assert (transforms[2] == 0).all()
    # an empty query
    inliers, _ = verify_many(qw[:0], qg[:0], words, geom, offsets, np.full(4, 1280.0))
    assert (inliers == 0).all()


def test_verification_refuses_bad_input():
    qw = np.array([3, 1, 2], np.int32)
    qg = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="sorted by word"):
        verify_pair(qw, qg, np.sort(qw), qg, 100)
    with pytest.raises(ValueError, match="sides"):
        verify_many(np.sort(qw), qg, np.sort(qw), qg, [0, 3], [100, 100])
    with pytest.raises(ValueError, match="offsets"):
        verify_many(np.sort(qw), qg, np.sort(qw), qg, [0, 5], [100])
    with pytest.raises(ValueError, match="tolerance"):
        VerifyParams(tolerance=0)
    with pytest.raises(ValueError, match="max_hypotheses"):
        VerifyParams(max_hypotheses=0)


def test_store_keeps_geometry_records(small_store):
    with Store(small_store) as store, h5py.File(small_store / "store.h5") as f:
        assert store.has_geometry
        g = f["geometry"]
        assert g.is_virtual and g.attrs["columns"] == "word,x,y,size,orientation"
        assert g.shape == (f["frames"].shape[0], 5) and g.dtype == np.uint16
        offsets = f["offsets"][:]
        width, height = f["images/width"][:], f["images/height"][:]
        ids = np.array([23, 0, 7, 7, 12])
        records, rec_offsets = store.geometry(ids)
        np.testing.assert_array_equal(np.diff(rec_offsets), offsets[ids + 1] - offsets[ids])
        for j, i in enumerate(ids):
            a, b = offsets[i], offsets[i + 1]
            got = records[rec_offsets[j]:rec_offsets[j + 1]]
            # the fast read equals plain h5py, and the record packs the frames and words
            np.testing.assert_array_equal(got, g[a:b])
            np.testing.assert_array_equal(
                got, pack_geometry(f["frames"][a:b], f["words"][a:b], width[i], height[i],
                                   n_words=64))
        empty, off = store.geometry([])
        assert empty.shape == (0, 5) and off.tolist() == [0]
        with pytest.raises(ValueError, match="image numbers"):
            store.geometry([24])


def test_rerank_and_matches(small_store):
    with Searcher(small_store) as searcher:
        query = searcher.query_from_key("chelsea/half.jpg")
        hits = searcher.search(query, k=5, rerank=True)
        assert [h["key"].split("/")[0] for h in hits] == ["chelsea"] * 5
        assert all(h["inliers"] >= MIN_INLIERS for h in hits)
        assert [h["inliers"] for h in hits] == sorted((h["inliers"] for h in hits),
                                                      reverse=True)
        expanded = searcher.search(query, k=5, rerank=True, expand=3)
        assert [h["key"].split("/")[0] for h in expanded] == ["chelsea"] * 5

        best = hits[0]
        m = searcher.matches(query, best["index"])
        assert m["inliers"] == best["inliers"] == len(m["query_points"])
        assert len(m["result_points"]) == m["inliers"]
        t = np.array(m["transform"])
        mapped = np.array(m["query_points"]) @ t[:, :2].T + t[:, 2]
        side = max(m["result_size"])
        assert np.abs(mapped - np.array(m["result_points"])).max() <= 0.021 * side
        # half.jpg is half the size of the original: the scale of the transform says so
        if best["key"] == "chelsea/original.jpg":
            assert 1.8 < np.hypot(t[0, 0], t[1, 0]) < 2.2
        with pytest.raises(ValueError, match="index"):
            searcher.matches(query, 99)


def test_rerank_from_a_file_query(small_store, small_set):
    with Searcher(small_store) as searcher:
        query = searcher.query(str(small_set / "chelsea" / "rotate12.jpg"))
        hits = searcher.search(query, k=6, rerank=True)
        assert hits[0]["key"] == "chelsea/rotate12.jpg"
        assert [h["key"].split("/")[0] for h in hits[:4]] == ["chelsea"] * 4
        m = searcher.matches(query, hits[1]["index"])
        t = np.array(m["transform"])
        # rotate12 against a copy that is not rotated: a rotation of about 12 degrees
        if hits[1]["key"] in ("chelsea/original.jpg", "chelsea/jpeg15.jpg"):
            assert abs(abs(np.degrees(np.arctan2(t[1, 0], t[0, 0]))) - 12) < 2


def test_stores_without_geometry_records_still_rerank(small_store, monkeypatch):
    with Searcher(small_store) as searcher:
        query = searcher.query_from_key("astronaut/rotate12.jpg")
        fast = searcher.search(query, k=5, rerank=True)
    monkeypatch.setattr(Store, "has_geometry", property(lambda self: False))
    with Searcher(small_store) as searcher:
        query = searcher.query_from_key("astronaut/rotate12.jpg")
        slow = searcher.search(query, k=5, rerank=True)
        with pytest.raises(StoreError, match="no geometry records"):
            searcher.store.geometry([0])
    assert [h["key"] for h in slow] == [h["key"] for h in fast]
    # the records are quantized: counts may differ by a match or two
    for a, b in zip(fast, slow):
        assert abs(a["inliers"] - b["inliers"]) <= max(2, 0.05 * a["inliers"])


def test_verified_matches_keeps_the_rows_of_the_frames(small_store, small_set):
    from features.search import inlier_count, verified_matches
    with Searcher(small_store) as searcher:
        query = searcher.query(str(small_set / "chelsea" / "half.jpg"))
        i = searcher.store.index_of("chelsea/original.jpg")
        candidate = searcher.store.image_features(i)
        qi, ci = verified_matches(query, candidate)
        m = searcher.matches(query, i)
        assert inlier_count(query, candidate) == len(qi) >= MIN_INLIERS
        # the same verification as from the geometry records, up to their quantization
        assert abs(len(qi) - m["inliers"]) <= 2
        np.testing.assert_allclose(query.frames[qi[:5], :2], m["query_points"][:5], atol=0.02)
        # the rows of the frames given, mapped onto each other by the transform
        t = np.array(m["transform"])
        mapped = query.frames[qi, :2] @ t[:, :2].T + t[:, 2]
        assert np.abs(mapped - candidate["frames"][ci, :2]).max() < 0.03 * max(m["result_size"])
        other = searcher.store.image_features(searcher.store.index_of("coins/original.jpg"))
        assert inlier_count(query, other) < MIN_INLIERS
        with pytest.raises(ValueError, match="threshold"):
            verified_matches(query, candidate, threshold=0)

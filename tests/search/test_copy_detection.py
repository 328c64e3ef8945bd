"""The quality bar: copy detection on real photos with the `sift` preset and ~1000 words."""
from features.demo import EDITS, PHOTOS
from features.search.metrics import retrieval_map
from features.pipeline import run
from features.presets import get_preset
from features.search import Searcher
from features.sources import open_source


def test_copy_detection_map(tmp_path, copy_set):
    config = get_preset("sift", words=1000)
    summary = run(config, open_source(str(copy_set)), tmp_path / "store", jobs=2, progress=False)
    assert summary.images == len(PHOTOS) * len(EDITS) and summary.failed == 0
    with Searcher(tmp_path / "store") as searcher:
        mean_ap, aps = retrieval_map(searcher)
        reranked, _ = retrieval_map(searcher, rerank=True)
    print(f"\ncopy detection mAP ({len(aps)} queries, sift preset, 1000 words): {mean_ap:.3f}"
          f"; with --rerank: {reranked:.3f}")
    assert len(aps) == len(PHOTOS) * len(EDITS)
    assert mean_ap >= 0.85
    # Geometric verification is worth its cost only if it ranks better than the plain search.
    assert reranked > mean_ap

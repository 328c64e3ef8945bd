"""The sbow record layout: the ILSVRC-2010 devkit's per-descriptor record and histograms."""
import h5py
import numpy as np

from features.pipeline import run
from features.presets import get_preset
from features.sources import open_source


def test_sbow_records(tmp_path, small_set):
    config = get_preset("sbow", words=50, sample_images=12)
    assert (config.max_side, config.sizes, config.step, config.scales) == (300, (5,), 10,
                                                                         (1.0, 0.5, 0.25))
    run(config, open_source(str(small_set)), tmp_path / "s", progress=False)
    with h5py.File(tmp_path / "s" / "store.h5", "r") as f:
        assert "descriptors" not in f                  # not kept at scale
        assert f["words"].dtype == np.int16
        assert f["frames"].attrs["units"] == "normalized"
        frames, scale, words = f["frames"][:], f["scale"][:], f["words"][:]
        offsets = f["offsets"][:]
        widths, heights = f["images/width"][:], f["images/height"][:]
        counts = f["encodings/bovw_counts"]
        indptr, indices, data = counts["indptr"][:], counts["indices"][:], counts["data"][:]
    assert (frames[:, :2] >= 0).all() and (frames[:, :2] <= 1).all()
    assert set(np.unique(scale)) == {0, 1, 2}
    assert (frames[:, 3] >= 0).all()                    # contrast norm
    assert words.min() >= 0 and words.max() < 50
    for i in range(len(widths)):
        a, b = offsets[i], offsets[i + 1]
        s = max(widths[i], heights[i])
        # grid every 10 px at max side 300 (never enlarged); as in vl_dsift, the 4 bin
        # centres of a 20-pixel patch span 3 x 5 pixels, and frames stay inside the image
        side = min(300, s)
        per_axis = lambda n: max(0, (n - 1 - 15) // 10 + 1)  # noqa: E731
        w = round(widths[i] * side / s)
        h = round(heights[i] * side / s)
        assert (scale[a:b] == 0).sum() == per_axis(w) * per_axis(h)
        assert (scale[a:b] == 1).sum() < (scale[a:b] == 0).sum()
        hist = np.zeros(50, int)
        hist[indices[indptr[i]:indptr[i + 1]]] = data[indptr[i]:indptr[i + 1]]
        np.testing.assert_array_equal(hist, np.bincount(words[a:b], minlength=50))

"""Labels are part of a store's identity: an ILSVRC val job without its ground truth warns,
a rerun with the ground truth (or another one) relabels the images without computing their
features again, and a ground truth that leaves images without a label is refused."""
import json

import cv2
import h5py
import numpy as np
import pytest
from skimage import data as skdata

from conftest import run_cli

WNIDS = ["n01440764", "n01443537", "n02119789"]
N = 6


@pytest.fixture
def val_folder(tmp_path):
    root = tmp_path / "val"
    root.mkdir()
    for i in range(1, N + 1):
        photo = (skdata.astronaut(), skdata.chelsea(), skdata.coffee())[i % 3]
        small = cv2.resize(photo[:, :, ::-1], (160, 120), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / f"ILSVRC2012_val_{i:08d}.JPEG"), np.roll(small, 9 * i, axis=1))
    return root


def _solution(path, wnids):
    rows = ["ImageId,PredictionString"]
    rows += [f"ILSVRC2012_val_{i:08d},{w} 1 2 30 40" for i, w in enumerate(wnids, 1)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _labels(store):
    with h5py.File(store / "store.h5") as f:
        classes = list(f["labels/wnid"].asstr()[:]) if "labels" in f else []
        return [classes[x] if x >= 0 else None for x in f["images/label"][:]]


def _frames(store):
    with h5py.File(store / "store.h5") as f:
        return f["frames"][:], f["descriptors"][:]


def test_val_job_labels_warn_relabel_and_cover(tmp_path, val_folder, cli_env):
    store = tmp_path / "s"
    args = ["run", val_folder, "-o", store, "--words", "8", "--max-side", "160",
            "--shard-size", "4", "-q"]
    proc = run_cli(*args, env=cli_env, check=True)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: warning: ") and \
        "without --labels" in lines[0], proc.stderr
    assert _labels(store) == [None] * N
    frames, descriptors = _frames(store)
    manifest = json.loads((store / "manifest.json").read_text())
    content = {k: r["content"] for k, r in manifest["shards"].items()}

    # the ground truth given on a rerun: every image relabelled, the features kept
    first = [WNIDS[i % 3] for i in range(N)]
    proc = run_cli(*args, "--labels", _solution(tmp_path / "a.csv", first), env=cli_env,
                   check=True)
    assert proc.stderr == ""
    assert _labels(store) == first
    f2, d2 = _frames(store)
    np.testing.assert_array_equal(f2, frames)
    np.testing.assert_array_equal(d2, descriptors)
    manifest = json.loads((store / "manifest.json").read_text())
    assert {k: r["content"] for k, r in manifest["shards"].items()} == content
    proc = run_cli("verify", store, env=cli_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # another ground truth: relabelled again (two classes only)
    other = [WNIDS[(i + 1) % 2] for i in range(N)]
    run_cli(*args, "--labels", _solution(tmp_path / "b.csv", other), env=cli_env, check=True)
    assert _labels(store) == other
    info = json.loads(run_cli("info", store, "--json", env=cli_env, check=True).stdout)
    assert info["classes"] == 2

    # a ground truth of 4 lines for 6 images: one line, exit 2, the store as it was
    proc = run_cli(*args, "--labels", _solution(tmp_path / "c.csv", first[:4]), env=cli_env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "covers 4 of the 6 images" in lines[0], proc.stderr
    assert "no label for 2 (first: ILSVRC2012_val_00000005.JPEG)" in lines[0]
    assert _labels(store) == other

"""Images in which the recipe finds nothing: their own status, out of the index, and a
clear error as a query."""
import shutil

import cv2
import h5py
import numpy as np
import pytest

from conftest import package_env, run_cli

ARGS = ["--words", 8, "--max-side", 160, "--failure-budget", 1, "-q"]


@pytest.fixture(scope="module")
def store_with_featureless(tmp_path_factory, small_set):
    env = package_env()
    root = tmp_path_factory.mktemp("nofeat")
    src = root / "src"
    shutil.copytree(small_set / "coins", src / "coins")
    cv2.imwrite(str(src / "coins" / "tiny.png"), np.full((1, 1), 128, np.uint8))
    cv2.imwrite(str(src / "coins" / "sliver.png"),
                (np.random.default_rng(0).random((2000, 10)) * 255).astype(np.uint8))
    cv2.imwrite(str(src / "coins" / "blank.png"), np.full((200, 300), 77, np.uint8))
    out = root / "store"
    proc = run_cli("run", src, "-o", out, *ARGS, env=env)
    assert proc.returncode == 0, proc.stderr
    return src, out


def test_featureless_images_have_their_status(store_with_featureless, cli_env):
    from features.store import NO_FEATURES, OK
    src, out = store_with_featureless
    with h5py.File(out / "store.h5", "r") as f:
        keys = list(f["images/key"].asstr()[:])
        status = f["images/status"][:]
        reasons = f["images/reason"].asstr()[:]
        offsets = f["offsets"][:]
    for name, why in (("tiny.png", "too small"), ("blank.png", "blank"),
                      ("sliver.png", "")):
        i = keys.index(f"coins/{name}")
        if name == "sliver.png" and status[i] == OK:
            continue          # a 10 px wide strip may still hold a few keypoints
        assert status[i] == NO_FEATURES, (name, status[i])
        assert reasons[i].startswith("no features") and why in reasons[i]
    ok_with = (status == OK) & (np.diff(offsets) > 0)
    assert ((status == OK) == ok_with).all()           # no "ok" image without features
    info = run_cli("verify", out, "--json", env=cli_env)
    assert info.returncode == 0, info.stdout
    import json
    assert json.loads(info.stdout)["checked"]["index_vectors"] == int(ok_with.sum())


def test_featureless_query_is_one_clear_error(store_with_featureless, cli_env):
    src, out = store_with_featureless
    for q in (src / "coins" / "blank.png", "coins/tiny.png"):
        proc = run_cli("search", out, q, env=cli_env)
        assert proc.returncode == 4 and "Traceback" not in proc.stderr   # a failed query
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "no features" in lines[0], proc.stderr

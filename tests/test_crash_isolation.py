"""A native crash on one image (segfault, abort, out-of-memory kill) is one failed item."""
import h5py
import pytest

from conftest import run_cli

ARGS = ["--words", 16, "--max-side", 160, "--shard-size", 5, "--failure-budget", 0.5, "-q"]


@pytest.mark.parametrize("kind,jobs", [("segv", 1), ("abort", 2), ("kill", 1)])
def test_worker_crash_becomes_a_failed_item(tmp_path, small_set, cli_env, kind, jobs):
    out = tmp_path / "store"
    env = dict(cli_env, FEATURES_TEST_CRASH_ON=f"{kind}:coins/half.jpg")
    proc = run_cli("run", small_set, "-o", out, "--jobs", jobs, *ARGS, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "24 images, 1 failed" in proc.stdout
    with h5py.File(out / "store.h5", "r") as f:
        keys = list(f["images/key"].asstr()[:])
        i = keys.index("coins/half.jpg")
        assert f["images/status"][i] != 0
        assert f["images/reason"].asstr()[i].startswith("crashed the decoder")
        assert (f["images/status"][:] != 0).sum() == 1
    assert run_cli("verify", out, env=cli_env).returncode == 0
    assert not list(out.rglob(".*.tmp-*"))

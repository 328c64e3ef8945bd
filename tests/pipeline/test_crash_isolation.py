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


def _square_or_die(x, parallel=False):
    import os
    import signal
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x, parallel, os.getpid()


def test_tasks_without_images_run_on_joblib_workers_and_a_dead_one_is_one_error():
    """Aggregation tasks go to joblib's processes (in order, flagged parallel); a worker
    killed under one ends the job with the WorkerDied error the command prints as a line."""
    import os
    from features.exceptions import WorkerDied
    from features.pipeline.runner import run_tasks
    out = list(run_tasks(_square_or_die, [(0,), (1,), (2,), (4,)], 2))
    assert [r[0] for r in out] == [0, 1, 4, 16] and all(r[1] for r in out)
    assert os.getpid() not in {r[2] for r in out}
    with pytest.raises(WorkerDied, match="_square_or_die; rerun the same command"):
        list(run_tasks(_square_or_die, [(x,) for x in range(6)], 2))
    assert [r[:2] for r in run_tasks(_square_or_die, [(2,)], 1)] == [(4, False)]

"""A job whose cluster loses every worker never waits for ever: it ends with one
ClusterError (a real scheduler and worker process on loopback)."""
import os
import subprocess
import sys
import time

import pytest

from features.exceptions import ClusterError
from features.pipeline import cluster as cluster_mod

pytest.importorskip("distributed")


def _wait(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_local_cluster_whose_workers_cannot_restart_gets_new_ones(tmp_path):
    """The workers of a local:2 cluster die and their nannies do not start them again (as
    happens on a loaded machine): the job's tasks still run, on new workers."""
    lines = tmp_path / "stderr"
    with open(lines, "w") as stream, cluster_mod.Cluster("local:2", stream=stream) as c:
        for nanny in list(c._local.workers.values()):
            c._local.sync(nanny.close)          # the worker ends and nothing restarts it
        _wait(lambda: not c.client.scheduler_info()["workers"], 30, "the workers to leave")

        def square(x, parallel=True):
            return x * x

        assert list(c.map(square, [(2,), (3,), (4,)])) == [4, 9, 16]
        _wait(lambda: len(c.client.scheduler_info()["workers"]) == 2, 60, "two workers")
    assert "cluster: no worker left in local:2; starting 2 new ones" in lines.read_text()


def test_a_cluster_without_workers_ends_the_job(tmp_path, monkeypatch):
    """Workers of a scheduler of their own all stop mid-job: one ClusterError naming the
    wait, after LOST_WORKERS_TIMEOUT seconds, not a hang."""
    monkeypatch.setattr(cluster_mod, "LOST_WORKERS_TIMEOUT", 3.0)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", ":0"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                               f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--no-nanny"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with cluster_mod.Cluster(f"tcp://127.0.0.1:{port}", timeout=30,
                                 stream=open(os.devnull, "w")) as c:

            def slow(x, parallel=True):
                time.sleep(120)
                return x

            results = c.map(slow, [(1,)])
            worker.kill()
            worker.wait()
            started = time.monotonic()
            with pytest.raises(ClusterError, match="has had no worker for 3 s"):
                next(results)
            assert time.monotonic() - started < 60
    finally:
        for proc in (worker, scheduler):
            proc.kill()
            proc.wait()


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

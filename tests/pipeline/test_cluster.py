"""The job on a real Dask cluster: `dask scheduler` and `dask worker` processes on loopback,
faults put into real workers (see _dask_worker_faults.py), the real `features` command."""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from features.exceptions import StoreError
from features.store import Manifest

from conftest import run_cli

pytest.importorskip("distributed")

HERE = Path(__file__).resolve().parents[1]   # tests/
FAULTS = HERE / "_dask_worker_faults.py"
RECIPE = ["--words", 32, "--max-side", 200, "--shard-size", 3, "-q"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class DaskProcesses:
    """A scheduler and workers as separate processes, started the way a user would."""

    def __init__(self, tmp_path, env):
        self.tmp_path, self.env = tmp_path, env
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs = []
        log = open(tmp_path / "scheduler.log", "w")
        self.scheduler = self._start([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                      "--host", "127.0.0.1", "--port", str(self.port),
                                      "--dashboard-address", ":0"], env, log)

    def _start(self, argv, env, log, prefix=()):
        proc = subprocess.Popen([*prefix, *argv], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def worker(self, name, *, prefix=(), **fault_env):
        env = dict(self.env, **{k: str(v) for k, v in fault_env.items()})
        log = open(self.tmp_path / f"worker-{name}.log", "w")
        return self._start([sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                            "--nthreads", "1", "--no-nanny", "--name", name,
                            "--dashboard-address", ":0", "--preload", str(FAULTS)],
                           env, log, prefix)

    def wait_for_workers(self, n, timeout=60):
        from distributed import Client
        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=timeout)

    def close(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def dask_processes(tmp_path, cli_env):
    cluster = DaskProcesses(tmp_path, cli_env)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, small_set):
    """The same job run by local joblib workers: what every cluster run must equal."""
    import os
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    out = tmp_path_factory.mktemp("reference") / "store"
    run_cli("run", small_set, "-o", out, *RECIPE, "--jobs", 2, env=env, check=True)
    return out


def _assert_same_store(a, b):
    """Every dataset of store.h5 equal, and the same shard files (no leftovers)."""
    with h5py.File(Path(a) / "store.h5") as fa, h5py.File(Path(b) / "store.h5") as fb:
        names = []
        fa.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        assert names
        for name in names:
            assert np.array_equal(fa[name][()], fb[name][()]), name
    assert sorted(os.listdir(Path(a) / "shards")) == sorted(os.listdir(Path(b) / "shards"))


def test_local_cluster_equals_local_workers(tmp_path, small_set, cli_env, local_reference):
    out = tmp_path / "store"
    proc = run_cli("run", small_set, "-o", out, *RECIPE, "--cluster", "local:2", env=cli_env,
                   check=True)
    assert "cluster: 2 workers at tcp://" in proc.stderr and "dashboard http" in proc.stderr
    if "MALLOC_TRIM_THRESHOLD_" not in cli_env:
        # local:N workers run with glibc's default malloc, as joblib's do
        assert "MALLOC_TRIM_THRESHOLD_" not in proc.stderr
    assert "24 images, 0 failed" in proc.stdout
    _assert_same_store(local_reference, out)
    # the index filled by tasks on the workers, merged by the driver
    from features.index import INDEX_FILE, REFINE_FILE, current_index_paths
    assert (current_index_paths(out)[INDEX_FILE].read_bytes()
            == current_index_paths(local_reference)[INDEX_FILE].read_bytes())

    # features aggregate's tasks on the cluster too
    copy = tmp_path / "reference"
    shutil.copytree(local_reference, copy)
    run_cli("aggregate", copy, "--method", "spm", "--jobs", 2, "-q", env=cli_env, check=True)
    run_cli("aggregate", out, "--method", "spm", "--cluster", "local:2", "-q", env=cli_env,
            check=True)
    _assert_same_store(copy, out)

    # a compressed index whose sparse refine rows are written by the tasks on the workers
    factory = "IVF2,Flat,Refine(Sparse)"
    run_cli("index", copy, "--index", factory, "--jobs", 2, env=cli_env, check=True)
    run_cli("index", out, "--index", factory, "--cluster", "local:2", env=cli_env, check=True)
    for name in (INDEX_FILE, REFINE_FILE):
        assert (current_index_paths(out)[name].read_bytes()
                == current_index_paths(copy)[name].read_bytes()), name


def test_worker_killed_while_writing_a_shard(tmp_path, small_set, cli_env, dask_processes,
                                             local_reference):
    held = tmp_path / "held"
    held.mkdir()
    dask_processes.worker("doomed", FEATURES_TEST_HOLD_DIR=held)
    dask_processes.worker("healthy", FEATURES_TEST_SHARD_DELAY=0.2)
    dask_processes.wait_for_workers(2)
    out = tmp_path / "store"
    job = subprocess.Popen([sys.executable, "-m", "features", "run", str(small_set), "-o",
                            str(out), *map(str, RECIPE), "--cluster", dask_processes.address],
                           env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(held.iterdir()), 240, "the doomed worker to start a shard")
        marker = next(held.iterdir())
        shard = Path(marker.read_text())
        temporaries = list(shard.parent.glob(f".{shard.name}.tmp-*"))
        assert temporaries, "the doomed worker left no half-written shard"
        os.kill(int(marker.name), signal.SIGKILL)
        stdout, stderr = job.communicate(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, stderr
    assert "24 images, 0 failed" in stdout
    assert not list((out / "shards").glob(".*")), "a temporary was left in the store"
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(int(n) for n in manifest["shards"]) == list(range(8))
    _assert_same_store(local_reference, out)
    if "verify" in run_cli("--help", env=cli_env).stdout:
        run_cli("verify", out, env=cli_env, check=True)


def test_driver_killed_then_resumed(tmp_path, small_set, cli_env, dask_processes,
                                    local_reference):
    for name in ("a", "b"):
        dask_processes.worker(name, FEATURES_TEST_SHARD_DELAY=0.5)
    dask_processes.wait_for_workers(2)
    out = tmp_path / "store"
    args = ["run", str(small_set), "-o", str(out), *map(str, RECIPE),
            "--cluster", dask_processes.address]
    job = subprocess.Popen([sys.executable, "-m", "features", *args], env=cli_env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def some_shards_done():
        with contextlib.suppress(OSError, ValueError, StoreError):
            return len(Manifest(out).data["shards"]) >= 2
        return False
    try:
        _wait_for(some_shards_done, 240, "two finished shards")
        job.kill()
        job.wait()
    finally:
        if job.poll() is None:
            job.kill()
    done = Manifest(out).data["shards"]
    assert 2 <= len(done) < 8
    run_cli(*args, env=cli_env, check=True)
    _assert_same_store(local_reference, out)


def test_workers_with_malloc_trim_are_named(dask_processes):
    import io
    from features.pipeline.cluster import Cluster
    dask_processes.worker("trimmed", MALLOC_TRIM_THRESHOLD_=65536)
    dask_processes.wait_for_workers(1)
    stream = io.StringIO()
    with Cluster(dask_processes.address, stream=stream, timeout=30):
        pass
    assert "1 of 1 workers run with MALLOC_TRIM_THRESHOLD_ set" in stream.getvalue()


def _assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_unreachable_scheduler_fails_fast(tmp_path, small_set, cli_env):
    start = time.monotonic()
    proc = run_cli("run", small_set, "-o", tmp_path / "s", *RECIPE,
                   "--cluster", f"tcp://127.0.0.1:{_free_port()}", env=cli_env)
    _assert_one_line_error(proc, "cannot reach the Dask scheduler")
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("spec", ["local:0", "local:x", "127.0.0.1:8786"])
def test_bad_cluster_spec(tmp_path, small_set, cli_env, spec):
    proc = run_cli("run", small_set, "-o", tmp_path / "s", *RECIPE, "--cluster", spec,
                   env=cli_env)
    _assert_one_line_error(proc, "--cluster")


@pytest.mark.parametrize("fault, fragment", [
    ({"FEATURES_TEST_VERSION": "0.0.0+other"}, "has features 0.0.0+other"),
    ({"FEATURES_TEST_NO_PACKAGE": "1"}, "cannot run features"),
])
def test_mismatched_worker_refused_before_any_task(tmp_path, small_set, cli_env,
                                                   dask_processes, fault, fragment):
    dask_processes.worker("odd", **fault)
    dask_processes.wait_for_workers(1)
    out = tmp_path / "store"
    proc = run_cli("run", small_set, "-o", out, *RECIPE, "--cluster", dask_processes.address,
                   env=cli_env)
    _assert_one_line_error(proc, fragment, "install")
    assert not (out / "sample.npy").exists()


@pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0,
                    reason="needs root and unshare to hide the store from a worker")
def test_store_the_workers_cannot_write(tmp_path, small_set, cli_env, dask_processes):
    # The worker runs in its own mount namespace, where the store's folder is covered by a
    # read-only filesystem: the store is not on a filesystem it shares with the driver.
    hidden = tmp_path / "shared"
    hidden.mkdir()
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"])
    if probe.returncode:
        pytest.skip("unshare --mount is not permitted here")
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount -t tmpfs -o ro none {hidden} && exec \"$@\"", "sh"]
    dask_processes.worker("elsewhere", prefix=wrap)
    dask_processes.wait_for_workers(1)
    proc = run_cli("run", small_set, "-o", hidden / "store", *RECIPE,
                   "--cluster", dask_processes.address, env=cli_env)
    _assert_one_line_error(proc, "cannot write", "filesystem the workers share")


def test_image_that_crashes_every_worker_is_one_failed_item(tmp_path, small_set, cli_env):
    """A file that kills each Dask worker that decodes it (the test hook segfaults on it):
    the driver runs that shard in an isolated process, the image fails with its reason,
    the job goes on and the store verifies."""
    out = tmp_path / "store"
    env = dict(cli_env, FEATURES_TEST_CRASH_ON="segv:coins/half.jpg")
    proc = run_cli("run", small_set, "-o", out, *RECIPE, "--failure-budget", 0.5,
                   "--cluster", "local:2", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "24 images, 1 failed" in proc.stdout
    assert "killed every worker that ran it; running it here" in proc.stderr
    with h5py.File(out / "store.h5", "r") as f:
        keys = list(f["images/key"].asstr()[:])
        status = f["images/status"][:]
        i = keys.index("coins/half.jpg")
        assert f["images/reason"].asstr()[i].startswith("crashed the decoder")
        assert (status != 0).sum() == 1
    run_cli("verify", out, env=cli_env, check=True)


def _listening(pids):
    """(address, port) of every TCP socket in LISTEN state that the processes hold."""
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:          # 0A: LISTEN
                address, port = local.split(":")
                found.append((address, int(port, 16)))
    return found


def test_local_cluster_listens_on_loopback_only():
    from features.pipeline.cluster import Cluster
    with Cluster("local:1", stream=open(os.devnull, "w"), timeout=60) as cluster:
        pids = [os.getpid()] + [p for p in _children(os.getpid())]
        sockets = _listening(pids)
        dashboard = cluster.client.scheduler_info()["services"].get("dashboard")
    assert sockets, "no listening socket found"
    assert dashboard in {port for _, port in sockets}
    # 127.0.0.1 is 0100007F in /proc/net/tcp; every interface is 00000000 (or :: in tcp6)
    assert all(address in ("0100007F", "00000000000000000000000001000000")
               for address, _ in sockets), sockets


def _children(pid):
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry.name))
                    out += _children(int(entry.name))
    return out


def test_scheduler_killed_mid_job_is_one_line(tmp_path, small_set, cli_env, dask_processes):
    """Dask's own logging (reconnect attempts, tracebacks) does not reach the user: the job
    ends with one line saying what happened and what to do."""
    dask_processes.worker("a", FEATURES_TEST_SHARD_DELAY=0.5)
    dask_processes.wait_for_workers(1)
    out = tmp_path / "store"
    job = subprocess.Popen([sys.executable, "-m", "features", "run", str(small_set), "-o",
                            str(out), *map(str, RECIPE), "--cluster", dask_processes.address],
                           env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def a_shard_done():
        assert job.poll() is None, job.communicate()
        with contextlib.suppress(OSError, ValueError, StoreError):
            return len(Manifest(out).data["shards"]) >= 1
        return False
    try:
        _wait_for(a_shard_done, 240, "a finished shard")
        dask_processes.scheduler.kill()
        stdout, stderr = job.communicate(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert job.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if line.startswith("features: error:")]
    assert len(errors) == 1 and "scheduler" in errors[0], stderr
    # nothing but the cluster's greeting lines and the error
    assert all(line.startswith(("cluster:", "features: error:")) for line in lines), stderr


# ---- a cluster that loses every worker never waits for ever ----------------------------

def test_local_cluster_whose_workers_cannot_restart_gets_new_ones(tmp_path):
    """The workers of a local:2 cluster die and their nannies do not start them again (as
    happens on a loaded machine): the job's tasks still run, on new workers."""
    from features.pipeline.cluster import Cluster
    lines = tmp_path / "stderr"
    with open(lines, "w") as stream, Cluster("local:2", stream=stream) as c:
        for nanny in list(c._local.workers.values()):
            c._local.sync(nanny.close)          # the worker ends and nothing restarts it
        _wait_for(lambda: not c.client.scheduler_info()["workers"], 30, "the workers to leave")

        def square(x, parallel=True):
            return x * x

        assert list(c.map(square, [(2,), (3,), (4,)])) == [4, 9, 16]
        _wait_for(lambda: len(c.client.scheduler_info()["workers"]) == 2, 60, "two workers")
    assert "cluster: no worker left in local:2; starting 2 new ones" in lines.read_text()


def test_a_cluster_without_workers_ends_the_job(dask_processes, monkeypatch, tmp_path):
    """Workers of a scheduler of their own all stop mid-job: one ClusterError naming the
    wait, after LOST_WORKERS_TIMEOUT seconds, not a hang."""
    from features.exceptions import ClusterError
    from features.pipeline import cluster
    monkeypatch.setattr(cluster, "LOST_WORKERS_TIMEOUT", 3.0)
    worker = dask_processes.worker("only")
    dask_processes.wait_for_workers(1)
    with cluster.Cluster(dask_processes.address, timeout=30,
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

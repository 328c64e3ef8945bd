"""One writer per store: the lock on the store directory."""
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import run_cli
from features.store.lock import LOCK_FILE, lock_holder, store_lock
from features.exceptions import StoreLocked


def _hold_lock(directory, ready, release):
    with store_lock(directory, "test"):
        ready.set()
        release.wait(30)


def _try_lock(directory, start, results, everyone_tried):
    start.wait(30)
    try:
        with store_lock(directory, "race"):
            results.put(("won", os.getpid()))
            # held until every racer has had its try: on a loaded machine a racer that
            # starts late would otherwise find the lock released and rightly win it too
            everyone_tried.wait(60)
    except StoreLocked as e:
        results.put(("lost", str(e)))


def _ctx():
    return multiprocessing.get_context("spawn")


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    ctx = _ctx()
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    p.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreLocked) as e:
            with store_lock(tmp_path, "run"):
                pass
        msg = str(e.value)
        assert f"pid {p.pid}" in msg and socket.gethostname() in msg and "since" in msg
        assert "\n" not in msg
        assert lock_holder(tmp_path)["pid"] == p.pid
    finally:
        release.set()
        p.join(30)
    assert not (tmp_path / LOCK_FILE).exists()       # released and removed
    with store_lock(tmp_path, "run"):                 # free again
        with store_lock(tmp_path, "run"):             # reentrant in one process
            pass
        assert lock_holder(tmp_path)["pid"] == os.getpid()
    assert lock_holder(tmp_path) is None


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    ctx = _ctx()
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert lock_holder(tmp_path)["pid"] == p.pid     # left behind
    with store_lock(tmp_path, "run"):
        assert lock_holder(tmp_path)["pid"] == os.getpid()


def test_lock_file_of_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "since": "then", "command": "run"}))
    with store_lock(tmp_path, "run"):
        assert lock_holder(tmp_path)["pid"] == os.getpid()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps(
        {"pid": 1, "host": "elsewhere.example", "since": "2026-01-01T00:00:00", "command": "run"}))
    with pytest.raises(StoreLocked, match="pid 1 on elsewhere.example.*delete"):
        with store_lock(tmp_path, "run"):
            pass
    assert (tmp_path / LOCK_FILE).exists()


def test_takeover_race_has_one_winner(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "since": "then", "command": "run"}))
    ctx = _ctx()
    start, results, everyone_tried = ctx.Event(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_try_lock, args=(tmp_path, start, results, everyone_tried))
             for _ in range(4)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    everyone_tried.set()
    for p in procs:
        p.join(30)
    assert [o for o, _ in outcomes].count("won") == 1, outcomes


def test_two_runs_at_once_never_mix_a_store(tmp_path, small_set, cli_env):
    """Two `features run` with different --words on the same store at the same moment: one
    is refused with one line (exit 2), the store is that of the other."""
    out = tmp_path / "store"
    common = ["--max-side", 160, "--shard-size", 4, "-q"]
    a = subprocess.Popen([sys.executable, "-m", "features", "run", str(small_set), "-o", str(out),
                          "--words", "16", *map(str, common)], env=cli_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / LOCK_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    b = run_cli("run", small_set, "-o", out, "--words", 8, *common, env=cli_env)
    a_out, a_err = a.communicate(timeout=600)
    assert a.returncode == 0, a_err
    assert b.returncode == 2 and "Traceback" not in b.stderr
    lines = b.stderr.strip().splitlines()
    assert len(lines) == 1, b.stderr
    # refused for the lock while the first one runs (or, on a machine slow enough for the
    # first run to finish meanwhile, for its configuration)
    assert (f"pid {a.pid}" in lines[0] and "features run" in lines[0]) or \
        "another configuration" in lines[0], lines[0]
    with h5py.File(out / "store.h5", "r") as f:
        assert f["codebook/centroids"].shape[0] == 16
        assert int(f["words"][:].max()) < 16
        assert json.loads(f.attrs["config"])["words"] == 16
        assert np.asarray(f["encodings/bovw"].attrs["shape"])[1] == 16


def test_lock_keeps_its_flock_when_looked_at_while_created(tmp_path, monkeypatch):
    """Another writer may open the new, still empty lock file and hold its flock for a
    moment; the creator must still end up holding the flock, or the next writer would
    take the live lock for a stale one (seen as two winners of a takeover race)."""
    import fcntl
    import threading
    import features.store.lock as lock_mod

    real_open = os.open
    peeked, done = threading.Event(), threading.Event()

    def peek(path):
        fd = real_open(path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        peeked.set()
        time.sleep(0.3)
        os.close(fd)
        done.set()

    def open_then_peek(path, flags, *args):
        fd = real_open(path, flags, *args)
        if flags & os.O_EXCL and not peeked.is_set():
            threading.Thread(target=peek, args=(path,)).start()
            assert peeked.wait(10)
        return fd

    monkeypatch.setattr(lock_mod.os, "open", open_then_peek)
    with store_lock(tmp_path, "run"):
        monkeypatch.setattr(lock_mod.os, "open", real_open)
        assert done.wait(10)
        fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        with pytest.raises(StoreLocked):
            ctx = _ctx()
            q = ctx.Queue()
            p = ctx.Process(target=_try_lock_now, args=(tmp_path, q))
            p.start()
            outcome = q.get(timeout=60)
            p.join(30)
            if outcome[0] == "lost":
                raise StoreLocked(outcome[1])


def _try_lock_now(directory, results):
    try:
        with store_lock(directory, "second"):
            results.put(("won", os.getpid()))
    except StoreLocked as e:
        results.put(("lost", str(e)))

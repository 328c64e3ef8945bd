"""One writer per store: the lock on the store directory."""
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from features.lock import LOCK_FILE, StoreLocked, lock_holder, store_lock


def _hold_lock(directory, ready, release):
    with store_lock(directory, "test"):
        ready.set()
        release.wait(30)


def _try_lock(directory, start, results):
    start.wait(30)
    try:
        with store_lock(directory, "race"):
            results.put(("won", os.getpid()))
            time.sleep(0.5)
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
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_try_lock, args=(tmp_path, start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert [o for o, _ in outcomes].count("won") == 1, outcomes

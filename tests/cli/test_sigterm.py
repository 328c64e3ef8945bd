"""SIGTERM (kill, SLURM, systemd, docker stop) stops a job as Ctrl-C does: one line, exit
status 143, workers ended, the store's lock released, and a rerun resumes and completes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from features.exceptions import StoreError
from features.store import Manifest

from conftest import run_cli


def _group(pgid) -> list:
    """The processes of process group ``pgid`` still alive (zombies count as gone)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the fields after the command name, which is in parentheses and may hold spaces
        fields = stat[stat.rindex(")") + 2:].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            alive.append(int(entry.name))
    return alive


def _wait_for_pass_two(out, proc, timeout=300):
    """Until the manifest records a finished shard of pass 2 (or the job ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if Manifest(out).data["shards"]:
                return
        except (OSError, ValueError, StoreError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"the job did not reach pass 2 (exit status {proc.poll()})")


@pytest.fixture(scope="module")
def images(tmp_path_factory, small_set):
    """The small set four times over (96 images): pass 2 lasts long enough to be stopped."""
    root = tmp_path_factory.mktemp("sigterm") / "images"
    for copy in range(4):
        for f in small_set.rglob("*.*"):
            target = root / f.parent.name / f"{copy}-{f.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
    return root


@pytest.mark.parametrize("to", ["process", "group"])
def test_sigterm_stops_cleanly_and_the_rerun_resumes(images, tmp_path, cli_env, to):
    out = tmp_path / "store"
    args = [images, "-o", out, "--words", 32, "--max-side", 320, "--shard-size", 2,
            "--jobs", 2, "-q"]
    # its own process group: the workers are found there, and `group` signals all of it
    # as SLURM and systemd do
    proc = subprocess.Popen([sys.executable, "-m", "features", "run", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env, start_new_session=True)
    try:
        _wait_for_pass_two(out, proc)
        assert (out / "lock").exists()
        if to == "group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert stderr.splitlines() == ["features: terminated; rerun the same command to resume"]
    assert "Traceback" not in stderr and "Error" not in stderr
    assert not (out / "lock").exists()
    deadline = time.monotonic() + 10
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group(proc.pid) == [], "worker processes outlived the job"

    shards = Manifest(out).data["shards"]
    assert 0 < len(shards) < 48
    written = {r["file"]: (out / "shards" / r["file"]).stat().st_mtime_ns
               for r in shards.values()}
    rerun = run_cli("run", *args, env=cli_env, check=True)
    assert "96 images, 0 failed" in rerun.stdout and rerun.stderr == ""
    # resumed: the shards finished before the signal are kept as they were
    assert {f: (out / "shards" / f).stat().st_mtime_ns for f in written} == written
    info = json.loads(run_cli("info", out, "--json", env=cli_env, check=True).stdout)
    assert info["images"] == 96 and info["index_size"] == 96

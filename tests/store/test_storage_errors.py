"""Storage errors (full disk, read-only, a path under a file): one line, exit 2, no
temporaries left, and a rerun resumes once the cause is gone."""
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import run_cli

ARGS = ["--words", 16, "--max-side", 320, "-q"]


def _one_line(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Segmentation" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error:"), proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(params=["256k"])
def tmpfs(tmp_path, request):
    """A small tmpfs (needs root and a kernel that lets this container mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# 400k fills while the first shard is written; 1200k after two of the four shards.
@pytest.mark.parametrize("tmpfs", ["400k", "1200k"], indirect=True)
def test_disk_full_then_resume(tmpfs, small_set, cli_env):
    out = tmpfs / "store"
    proc = run_cli("run", small_set, "-o", out, *ARGS, "--shard-size", 6, env=cli_env)
    _one_line(proc, "no space left on the device", str(out))
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not (out / "lock").exists()
    subprocess.run(["mount", "-o", "remount,size=200m", str(tmpfs)], check=True)
    proc = run_cli("run", small_set, "-o", out, *ARGS, "--shard-size", 6, env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert run_cli("verify", out, env=cli_env).returncode == 0


def test_read_only_output(tmpfs, small_set, cli_env):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    _one_line(run_cli("run", small_set, "-o", tmpfs / "store", *ARGS, env=cli_env),
              "read-only file system", str(tmpfs / "store"))


def test_output_under_a_regular_file(tmp_path, small_set, cli_env):
    (tmp_path / "file").write_text("x")
    _one_line(run_cli("run", small_set, "-o", tmp_path / "file" / "store", *ARGS, env=cli_env),
              "not a folder")
    _one_line(run_cli("run", small_set, "-o", tmp_path / "file", *ARGS, env=cli_env),
              "not a folder")


def test_permission_denied(tmp_path, small_set, cli_env):
    """Also as root: the command runs without the capabilities that override file modes."""
    prefix = []
    if os.geteuid() == 0:
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
        if subprocess.run([*prefix, "true"], capture_output=True).returncode:
            pytest.skip("setpriv cannot drop capabilities here")
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o500)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "features", "run", str(small_set),
                               "-o", str(d / "store"), *map(str, ARGS)],
                              capture_output=True, text=True, env=cli_env, timeout=600)
        _one_line(proc, "permission denied", str(d / "store"))
    finally:
        d.chmod(0o700)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_set):
    """A finished small store (5 shards), copied onto the full disks of the sweep."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = tmp_path_factory.mktemp("finished") / "store"
    proc = run_cli("run", small_set, "-o", out, *ARGS, "--shard-size", 5, env=env)
    assert proc.returncode == 0, proc.stderr
    return out


def _leave_free(mnt, kb):
    """Fill the tmpfs ``mnt`` up to ``kb`` KB free."""
    free = shutil.disk_usage(mnt).free - kb * 1024
    if free > 0:
        fd = os.open(mnt / "filler", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, free)
        finally:
            os.close(fd)


# Free space in KB for each command, in steps through where each of its files is written
# (on the 5-shard store: the encoding's shards, its models, the copy of store.h5 for
# aggregate; the trained index, the part and index.faiss for index).
SWEEP = {
    "run": [150, 450, 750, 1050],
    "aggregate": [0, 100, 300, 500, 700, 800, 850, 900, 950, 1000, 1100],
    "index": [0, 4, 8, 12, 16],
}


@pytest.mark.parametrize("tmpfs", ["16m"], indirect=True)
@pytest.mark.parametrize("command", sorted(SWEEP))
def test_full_disk_sweep(tmpfs, command, finished, small_set, cli_env):
    """At every step of free space the command succeeds, or ends in one line naming the
    full disk, exit 2, no temporary left (never a crash nor a traceback)."""
    outcomes = []
    for kb in SWEEP[command]:
        out = tmpfs / "store"
        shutil.rmtree(out, ignore_errors=True)
        (tmpfs / "filler").unlink(missing_ok=True)
        if command == "run":
            args = ["run", small_set, "-o", out, *ARGS, "--shard-size", 5]
        else:
            shutil.copytree(finished, out)
            args = (["aggregate", out, "--method", "vlad", "-q"] if command == "aggregate"
                    else ["index", out, "--force", "-q"])
        _leave_free(tmpfs, kb)
        proc = run_cli(*args, env=cli_env)
        left = [p for p in out.rglob("*") if ".tmp-" in p.name]
        assert not left, (kb, left)
        if proc.returncode != 0:
            _one_line(proc)
            assert ("no space left on the device" in proc.stderr
                    or "not enough disk space" in proc.stderr), proc.stderr
        outcomes.append(proc.returncode)
    assert 2 in outcomes                                  # the sweep reached a full disk

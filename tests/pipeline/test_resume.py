"""A job killed with SIGKILL at any moment resumes to the same store as a straight run."""
import json
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from features.exceptions import StoreError
from features.store import Manifest

from conftest import package_env, run_cli

ARGS = ["--words", 32, "--max-side", 200, "--shard-size", 2, "-q"]


def _start(src, out, env):
    return subprocess.Popen([sys.executable, "-m", "features", "run", str(src), "-o", str(out),
                             *map(str, ARGS)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _shards_done(out):
    try:
        return len(Manifest(out).data["shards"])
    except (OSError, ValueError, KeyError, StoreError):
        return 0


def _kill_when(proc, condition, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait()
    return False


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        out["attrs:config"] = f.attrs["config"]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_set):
    env = package_env()
    out = tmp_path_factory.mktemp("ref") / "store"
    run_cli("run", small_set, "-o", out, *ARGS, env=env, check=True)
    return out


@pytest.mark.parametrize("moment", ["during-sample", "after-sample", "after-2-shards",
                                    "after-7-shards", "several-kills"])
def test_kill_and_resume_gives_the_same_store(tmp_path, small_set, cli_env, reference, moment):
    out = tmp_path / "store"
    conditions = {
        "during-sample": [lambda: (out / "manifest.json").exists()],
        "after-sample": [lambda: (out / "sample.npy").exists()],
        "after-2-shards": [lambda: _shards_done(out) >= 2],
        "after-7-shards": [lambda: _shards_done(out) >= 7],
        "several-kills": [lambda: (out / "sample.npy").exists(), lambda: _shards_done(out) >= 3,
                          lambda: _shards_done(out) >= 8],
    }[moment]
    for condition in conditions:
        assert _kill_when(_start(small_set, out, cli_env), condition), "job ended before the kill"
    assert not (out / "store.h5").exists()
    run_cli("run", small_set, "-o", out, *ARGS, env=cli_env, check=True)
    a, b = _datasets(reference / "store.h5"), _datasets(out / "store.h5")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert not list(out.rglob(".*.tmp-*"))
    verify = run_cli("verify", out, "--json", env=cli_env)
    assert verify.returncode == 0, verify.stdout
    assert json.loads(verify.stdout)["sound"]


class _Killed(BaseException):
    """Stands for a kill: nothing of the step after it runs (not an Exception, which the
    steps might handle)."""


@pytest.mark.parametrize("damage", ["none", "torn-last-line"])
def test_killed_between_the_journal_and_its_fold_resumes_to_the_same_store(
        tmp_path, small_set, small_config, small_store, monkeypatch, damage):
    from features.pipeline import run
    from features.sources import open_source
    from features.store.layout import JOURNAL_FILE

    out = tmp_path / "store"
    real = Manifest.step_done

    def killed_before_the_fold(self, step, **info):
        if step == "encode":            # every shard journaled, store.h5 merged, not folded
            raise _Killed
        return real(self, step, **info)

    monkeypatch.setattr(Manifest, "step_done", killed_before_the_fold)
    with pytest.raises(_Killed):
        run(small_config, open_source(str(small_set)), out, progress=False)
    monkeypatch.undo()
    journal = out / JOURNAL_FILE
    lines = journal.read_text().splitlines()
    assert len(lines) == len(Manifest(out).data["shards"]) == 5
    assert json.loads((out / "manifest.json").read_text())["shards"] == {}
    if damage == "torn-last-line":
        journal.write_bytes(journal.read_bytes()[:-25])    # the kill cut the last line
        assert len(Manifest(out).data["shards"]) == 4
    run(small_config, open_source(str(small_set)), out, progress=False)
    assert not journal.exists()
    a, b = _datasets(small_store / "store.h5"), _datasets(out / "store.h5")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert len(json.loads((out / "manifest.json").read_text())["shards"]) == 5

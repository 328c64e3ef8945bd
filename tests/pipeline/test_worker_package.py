"""The pipeline's workers import the very package the job runs, wherever the job is started.

A command started in the root of a checkout (the README's first command, after
``pip install .``) finds a ``features/`` folder in its working directory that is not the
package it runs (its kernels are not compiled there); a script read from stdin
(``python -``) has no file a worker could run again as its main module. Both run here as
real processes, as a user starts them.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py

import features

# the folder that holds the package under test (a checkout, or site-packages)
ROOT = str(Path(features.__file__).resolve().parents[1])

JOB = """
import os
import sys
from features.pipeline import run
from features.presets import get_preset
from features.sources import open_source


def job(source, out):
    config = get_preset("sift", words=16, max_side=160, max_keypoints=200, shard_size=6,
                        sample_images=24)
    before = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH")}
    run(config, open_source(source), out, progress=False)
    # the job's environment is as it was: nothing leaks into what it starts later
    assert {k: os.environ.get(k) for k in before} == before, os.environ
    print("done")

"""


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.pop("PYTHONSAFEPATH", None)
    return env


def _uncompiled_copy(folder):
    """``folder`` with a copy of the package's source in ``features/`` and none of its
    compiled kernels: what the root of a checkout holds."""
    shutil.copytree(Path(features.__file__).parent, folder / "features",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    return folder


def _keys(store):
    with h5py.File(Path(store) / "store.h5", "r") as f:
        return sorted(f["images/key"].asstr()[:])


def test_a_job_started_in_a_checkout_uses_the_package_it_runs(
        tmp_path, small_set):
    """As the console script runs (its own folder first on the path, not the working
    directory), in a folder whose ``features/`` is not the package the job runs."""
    cwd = _uncompiled_copy(tmp_path / "checkout")
    script = tmp_path / "bin" / "job.py"
    script.parent.mkdir()
    script.write_text(JOB + 'if __name__ == "__main__":\n    job(*sys.argv[-2:])\n')
    out = tmp_path / "store"
    proc = subprocess.run([sys.executable, str(script), str(small_set), str(out)], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert len(_keys(out)) == 24


def test_a_pipeline_runs_from_a_script_read_from_stdin(tmp_path, small_set):
    out = tmp_path / "store"
    # a script typed into stdin has no guard: nothing can run it again
    proc = subprocess.run([sys.executable, "-", str(small_set), str(out)],
                          input=JOB + "job(*sys.argv[-2:])\n",
                          cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert len(_keys(out)) == 24

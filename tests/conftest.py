import sys
from pathlib import Path

import pytest

from features.demo import write_copy_set


@pytest.fixture(scope="session")
def copy_set(tmp_path_factory):
    """The copy-detection set: 18 shipped photos x (original + 5 edited copies)."""
    return write_copy_set(tmp_path_factory.mktemp("copyset") / "images")


@pytest.fixture(scope="session")
def small_set(tmp_path_factory):
    """A few photos with their copies: 4 classes x 6 images, for fast pipeline tests."""
    return write_copy_set(tmp_path_factory.mktemp("smallset") / "images",
                          photos=("astronaut.png", "chelsea.png", "coins.png", "rocket.jpg"))


@pytest.fixture(scope="session")
def small_config():
    from features.presets import get_preset
    return get_preset("sift", words=64, max_side=256, max_keypoints=400, shard_size=5,
                      sample_images=24)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, small_set, small_config):
    from features.pipeline import run
    from features.sources import open_source
    out = tmp_path_factory.mktemp("store") / "store"
    run(small_config, open_source(str(small_set)), out, progress=False)
    return out


@pytest.fixture
def cli_env():
    """Environment for running the real `features` command in a subprocess."""
    import os
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args, env=None, check=False):
    import subprocess
    proc = subprocess.run([sys.executable, "-m", "features", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"features {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stderr}")
    return proc

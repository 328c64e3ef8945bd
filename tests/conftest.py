import sys
from pathlib import Path

import pytest

# This checkout's package first, as the commands the tests start get it (package_env): a
# test that reads what such a command writes (a manifest polled during a job) must read it
# with the same code, not with another checkout's installed in the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from features.demo import write_copy_set  # noqa: E402

SMALL_SET_EDITS = ("original", "jpeg15", "crop60", "rotate12", "half", "perspective")


@pytest.fixture(scope="session")
def copy_set(tmp_path_factory):
    """The copy-detection set: 18 shipped photos x (original + 7 edited copies, dark and
    hazy ones included)."""
    return write_copy_set(tmp_path_factory.mktemp("copyset") / "images")


@pytest.fixture(scope="session")
def small_set(tmp_path_factory):
    """A few photos with their copies: 4 classes x 6 images (the edits before the dark and
    hazy copies), for fast pipeline tests."""
    return write_copy_set(tmp_path_factory.mktemp("smallset") / "images",
                          photos=("astronaut.png", "chelsea.png", "coins.png", "rocket.jpg"),
                          edits=SMALL_SET_EDITS)


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


def package_env():
    """Environment for running the real `features` command in a subprocess: this checkout's
    package first on PYTHONPATH (module-scoped fixtures call it; tests take `cli_env`)."""
    import os
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def cli_env():
    """Environment for running the real `features` command in a subprocess."""
    return package_env()


def run_cli(*args, env=None, check=False):
    import subprocess
    proc = subprocess.run([sys.executable, "-m", "features", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"features {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stderr}")
    return proc


def write_store(directory, rows, *, status=None, keys=None, dense=None, chunk=256):
    """A minimal store.h5 (what `features.store.merge` writes that search reads, through the
    same writer) over the given float32 rows as the `bovw` CSR encoding; ``dense`` adds them
    again as a row-chunked float16 matrix `encodings/dense`. For index and query tests at
    sizes the image pipeline would take too long to reach."""
    import h5py
    import numpy as np

    from features.presets import get_preset
    from features.store.write import (CSRWriter, create_dense, create_offsets, write_codebook,
                                      write_header, write_idf, write_images)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = np.asarray(rows, np.float32)
    n, dim = rows.shape
    keys = [f"c{i % 7}/img_{i:06d}.jpg" for i in range(n)] if keys is None else list(keys)
    with h5py.File(directory / "store.h5", "w") as f:
        write_header(f, get_preset("sift"), n, created="2026-01-01T00:00:00")
        write_images(f, keys, label=np.arange(n, dtype=np.int32) % 7,
                     width=np.full(n, 640, np.int32), height=np.full(n, 480, np.int32),
                     status=status)
        create_offsets(f, n)
        bovw = CSRWriter(f.create_group("encodings"), "bovw", n, dim)
        r, c = np.nonzero(rows)
        bovw.append(np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))]), c,
                    rows[r, c])
        bovw.close()
        write_idf(f, np.ones(dim, np.float32))
        if dense:
            create_dense(f["encodings"], "dense", n, dim, np.float16,
                         chunk_rows=chunk)[:] = rows.astype(np.float16)
        write_codebook(f, np.random.default_rng(0).random((dim, 128), np.float32))
    return directory


def clustered_rows(n, dim=64, clusters=40, seed=0, nonneg=True):
    """L2-normalized rows around random centers, like tf-idf rows: near neighbours exist."""
    import numpy as np
    rng = np.random.default_rng(seed)
    centers = rng.random((clusters, dim), np.float32) ** 3
    x = centers[rng.integers(clusters, size=n)] + 0.15 * rng.random((n, dim), np.float32) ** 3
    if not nonneg:
        x -= x.mean()
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def faiss_one_thread():
    """FAISS training on a busy machine is far slower with spinning OpenMP threads."""
    import faiss
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def blas_thread_counts():
    """The thread counts the BLAS libraries of this process are set to, sorted."""
    from threadpoolctl import threadpool_info
    return sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})


def record_blas_threads(monkeypatch, owner, name):
    """Replace ``owner.name`` by a wrapper that records ``blas_thread_counts()`` at each
    call; returns the list of records."""
    seen = []
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        seen.append(blas_thread_counts())
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return seen

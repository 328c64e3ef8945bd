"""Worker processes run their libraries single-threaded: one worker per core, and no
BLAS, OpenMP or OpenCV pool inside it to oversubscribe the cores."""
import numpy as np
import pytest

from conftest import blas_thread_counts, record_blas_threads

threadpoolctl = pytest.importorskip("threadpoolctl")


def _pools(**hooks):
    import cv2
    return cv2.getNumThreads(), [(p["internal_api"], p["num_threads"])
                                 for p in threadpoolctl.threadpool_info()]


def test_isolated_workers_are_single_threaded():
    # The forked workers of --jobs (features.isolate) inherit no OPENBLAS_NUM_THREADS from a
    # pool manager: they must limit the BLAS themselves.
    from features.pipeline.isolate import call_isolated
    cv2_threads, pools = call_isolated(_pools)
    assert cv2_threads == 1
    assert pools, "no BLAS or OpenMP library found to check"
    assert all(n == 1 for _, n in pools), pools


def _task(number, delay, *, skip=None, on_item=None, fault=None):
    import time
    time.sleep(delay)
    return number


def test_isolated_tasks_finishing_out_of_order_then_more():
    # The first task finishes last: the job catches up with every task it has taken at once,
    # while the source still has more (it used to wait on no worker forever).
    from features.pipeline.isolate import run_isolated
    tasks = [(0, 1.0)] + [(i, 0.0) for i in range(1, 9)]
    assert list(run_isolated(_task, iter(tasks), 2, n_items=lambda _: 0)) == list(range(9))


@pytest.mark.parametrize("jobs", [1, 2])
def test_index_build_uses_the_cores_jobs_gives_it(small_store, monkeypatch, jobs):
    # The index is trained (and with --jobs 1 filled) in the calling process: FAISS's
    # OpenMP threads there follow --jobs, and are given back after the step.
    import faiss
    from features import index
    from features.pipeline import steps
    seen = []
    real = index.build

    def spy(*args, **kwargs):
        seen.append(faiss.omp_get_max_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(index, "build", spy)
    before = faiss.omp_get_max_threads()
    steps.build_index(small_store, force=True, jobs=jobs, progress=False)
    assert seen == [jobs]
    assert faiss.omp_get_max_threads() == before


@pytest.mark.parametrize("jobs", [1, 2])
def test_codebook_uses_the_cores_jobs_gives_it(tmp_path, small_store, small_config,
                                               monkeypatch, jobs):
    # k-means runs in the calling process: its BLAS threads follow --jobs (a thread per
    # core spins while another job holds one of them), and are given back after the step;
    # the codebook is the same either way (each iteration's words are exact).
    import shutil
    from threadpoolctl import threadpool_limits
    from features.pipeline import steps
    seen = record_blas_threads(monkeypatch, steps, "kmeans")
    out = tmp_path / "store"
    out.mkdir()
    for name in ("manifest.json", steps.SAMPLE_FILE):
        shutil.copy(small_store / name, out / name)
    with threadpool_limits(2, user_api="blas"):
        before = blas_thread_counts()
        path = steps.train_codebook(small_config, out / steps.SAMPLE_FILE, out, jobs=jobs,
                                    progress=False)
        assert blas_thread_counts() == before == [2]
    assert seen == [[jobs]]
    assert np.array_equal(np.load(path), np.load(small_store / "codebook.npy"))

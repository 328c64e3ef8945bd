"""Thread limits of worker processes."""
from __future__ import annotations

from contextlib import contextmanager


def single_threaded_libraries():
    """One thread in OpenCV, FAISS and every BLAS of this process.

    N worker processes on N cores: library thread pools inside each would oversubscribe.
    The BLAS's too: forked workers do not get the OPENBLAS_NUM_THREADS=1 that joblib's and
    Dask's workers are started with, and with a BLAS thread per core in each worker (the
    assignment's products) pass 2 on 2 cores ran 6x slower."""
    import cv2
    import faiss
    from threadpoolctl import threadpool_limits
    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    threadpool_limits(1)


_controller = None


def _blas_controller():
    global _controller
    from threadpoolctl import ThreadpoolController
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def one_blas_thread():
    """A context in which every BLAS of the process runs on one thread.

    For products whose float32 rounding must not depend on the machine: OpenBLAS splits a
    product differently on 1 and on 2 threads, and the sums come out different in the last
    bit. The libraries are looked up once (a lookup costs about a millisecond, a limit
    0.1 ms)."""
    return blas_threads(1)


def blas_threads(n: int):
    """A context in which every BLAS of the process runs on at most ``n`` threads.

    What a step runs in the calling process uses the cores that ``--jobs`` gives it: a BLAS
    thread per core spins while it waits for the others, and with the other core of 2 busy,
    k-means on 128,000 descriptors took 6.0 s with 2 threads against 3.6 s with one."""
    return _blas_controller().limit(limits=max(1, int(n)), user_api="blas")


@contextmanager
def faiss_threads(n: int):
    """FAISS's OpenMP threads limited to ``n`` in this block, restored after.

    What a step runs in the calling process (an index's training, its fill with ``--jobs
    1``) uses the cores that ``--jobs`` gives it, not every core: OpenMP's threads wait for
    each other by spinning, and with one of them descheduled by another job on the machine,
    building the index of 100,000 sbow images took 36.5 s instead of 10.5 (2 cores, the
    other one busy)."""
    import faiss
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)

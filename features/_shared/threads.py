"""Thread limits of worker processes."""
from __future__ import annotations


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


def one_blas_thread():
    """A context in which every BLAS of the process runs on one thread.

    For products whose float32 rounding must not depend on the machine: OpenBLAS splits a
    product differently on 1 and on 2 threads, and the sums come out different in the last
    bit. The libraries are looked up once (a lookup costs about a millisecond, a limit
    0.1 ms)."""
    global _controller
    from threadpoolctl import ThreadpoolController
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")

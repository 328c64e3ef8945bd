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

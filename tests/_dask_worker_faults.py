"""Preloaded into `dask worker` processes by tests/test_cluster.py (``--preload``) to put
faults into a real worker. Each is switched on by an environment variable of the worker:

FEATURES_TEST_HOLD_DIR      the first shard this worker writes is left half-written and the
                            worker waits, after writing its pid into that folder (to be killed)
FEATURES_TEST_SHARD_DELAY   seconds to sleep before writing each shard (a slow job)
FEATURES_TEST_VERSION       the version of `features` this worker claims
FEATURES_TEST_NO_PACKAGE    `features` cannot be imported on this worker
"""
import os
import sys
import time
from pathlib import Path

if os.environ.get("FEATURES_TEST_NO_PACKAGE"):
    sys.modules["features"] = None       # import features -> ImportError
else:
    import features
    import features.pipeline.tasks as jobs
    from features.store import atomic_path

    if os.environ.get("FEATURES_TEST_VERSION"):
        features.__version__ = os.environ["FEATURES_TEST_VERSION"]

    # Dask may run a preload file more than once in one process: wrap only once.
    _write_shard = getattr(jobs.write_shard, "wrapped", jobs.write_shard)

    def _faulty_write_shard(path, results, **kwargs):
        hold = os.environ.get("FEATURES_TEST_HOLD_DIR")
        if hold:
            atomic_path(path).write_bytes(b"half a shard")
            Path(hold, str(os.getpid())).write_text(str(path))
            time.sleep(120)
        time.sleep(float(os.environ.get("FEATURES_TEST_SHARD_DELAY", 0)))
        return _write_shard(path, results, **kwargs)

    _faulty_write_shard.wrapped = _write_shard
    jobs.write_shard = _faulty_write_shard

"""Compiled kernels (built from ext/*.pyx). They know nothing of files, configs or HDF5."""
import importlib
import sys


def load(name: str, what: str):
    """Import kernel module ``name``; a missing build fails with a clear message only when
    the kernel is actually used."""
    # the per-image paths call this a few times an image: a module already imported is
    # looked up directly (importlib's machinery cost about 5 us a call)
    module = sys.modules.get(f"{__name__}.{name}")
    if module is not None:
        return module
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise ImportError(f"the {what} kernel is not compiled; run "
                          "`python setup.py build_ext --inplace`") from exc

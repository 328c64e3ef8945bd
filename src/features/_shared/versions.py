"""The versions of the libraries a result was computed with (recorded in every store)."""
from __future__ import annotations

import platform


def library_versions() -> dict:
    import cv2
    import faiss
    import h5py
    import joblib
    import numpy as np

    from .. import __version__
    return {"features": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "opencv": cv2.__version__, "faiss": faiss.__version__,
            "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
            "joblib": joblib.__version__}

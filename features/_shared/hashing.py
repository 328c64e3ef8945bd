"""Checksums. Two formats are stored, and both must stay byte for byte what they are, since
stores written earlier are compared against them:

==================  =====================  ===============================================
function            format                 where it is stored
==================  =====================  ===============================================
``bytes_sha256``    ``"sha256:" + hex``    shard records of the manifest, ``encodings/idf``
``file_sha256``     ``"sha256:" + hex``    the same, for a file read in blocks
``array_sha256``    ``hex``                ``codebook/centroids``, ``models/ENC/MODEL``
                                           (dtype, shape and bytes of each array, in order)
==================  =====================  ===============================================
"""
from __future__ import annotations

import hashlib

import numpy as np


def bytes_sha256(data) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_sha256(path, block=1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def array_sha256(*arrays) -> str:
    """sha256 over the arrays' dtypes, shapes and bytes, in the order given."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()

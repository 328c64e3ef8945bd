"""ctypes access to the system VLFeat library (libvl, Debian's libvlfeat1).

Shared by ``benchmarks/bench_dsift.py``, ``benchmarks/bench_encode.py``,
``tests/test_vlfeat_agreement.py`` and ``tests/test_encodings_vlfeat.py`` (which
import it through ``sys.path``). Nothing of VLFeat is copied here: the library is
loaded at run time and only its public C API is called (``vl_imsmooth_f``,
``vl_dsift_new``, ``vl_dsift_process``, ``vl_fisher_encode``, ``vl_vlad_encode``,
``vl_kmeans_quantize``, ...).

``vl_dsift_set_*`` are inline functions in ``vl/dsift.h`` and so are not
exported; we set the same public fields of ``VlDsiftFilter`` through a ctypes
mirror of the struct and call the exported ``_vl_dsift_update_buffers``, which
is exactly what the inline setters do.

The image is handed over as a C-contiguous (row-major) array, so VLFeat's ``x``
is the column index. This makes the descriptors come out directly in the layout
that the MATLAB ``vl_dsift`` produces after its transpose to image axes
(``transpose(dsift(I)) = dsift(transpose(I))``), and the frames 0-based
(MATLAB adds 1).
"""
import ctypes
import ctypes.util
import glob
import os

import numpy as np

__all__ = ["load_libvl", "VLFeat", "phow_bound_offset", "VL_FISHER_FLAG_SQUARE_ROOT",
           "VL_FISHER_FLAG_NORMALIZED", "VL_FISHER_FLAG_IMPROVED", "VL_FISHER_FLAG_FAST",
           "VL_VLAD_FLAG_NORMALIZE_COMPONENTS", "VL_VLAD_FLAG_SQUARE_ROOT",
           "VL_VLAD_FLAG_UNNORMALIZED", "VL_VLAD_FLAG_NORMALIZE_MASS"]

# vl/generic.h, vl/mathop.h, vl/fisher.h, vl/vlad.h
VL_TYPE_FLOAT = 1
VL_DISTANCE_L2 = 1
VL_FISHER_FLAG_SQUARE_ROOT = 1 << 0
VL_FISHER_FLAG_NORMALIZED = 1 << 1
VL_FISHER_FLAG_IMPROVED = VL_FISHER_FLAG_SQUARE_ROOT | VL_FISHER_FLAG_NORMALIZED
VL_FISHER_FLAG_FAST = 1 << 2
VL_VLAD_FLAG_NORMALIZE_COMPONENTS = 1 << 0
VL_VLAD_FLAG_SQUARE_ROOT = 1 << 1
VL_VLAD_FLAG_UNNORMALIZED = 1 << 2
VL_VLAD_FLAG_NORMALIZE_MASS = 1 << 3


class _Keypoint(ctypes.Structure):
    _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double),
                ("s", ctypes.c_double), ("norm", ctypes.c_double)]


class _Geometry(ctypes.Structure):
    _fields_ = [("numBinT", ctypes.c_int), ("numBinX", ctypes.c_int),
                ("numBinY", ctypes.c_int), ("binSizeX", ctypes.c_int),
                ("binSizeY", ctypes.c_int)]


class _DsiftFilter(ctypes.Structure):
    # Mirror of VlDsiftFilter in vl/dsift.h (VLFeat 0.9.x).
    _fields_ = [
        ("imWidth", ctypes.c_int), ("imHeight", ctypes.c_int),
        ("stepX", ctypes.c_int), ("stepY", ctypes.c_int),
        ("boundMinX", ctypes.c_int), ("boundMinY", ctypes.c_int),
        ("boundMaxX", ctypes.c_int), ("boundMaxY", ctypes.c_int),
        ("geom", _Geometry),
        ("useFlatWindow", ctypes.c_int),
        ("windowSize", ctypes.c_double),
        ("numFrames", ctypes.c_int), ("descrSize", ctypes.c_int),
        ("frames", ctypes.POINTER(_Keypoint)),
        ("descrs", ctypes.POINTER(ctypes.c_float)),
        ("numBinAlloc", ctypes.c_int), ("numFrameAlloc", ctypes.c_int),
        ("numGradAlloc", ctypes.c_int),
        ("grads", ctypes.POINTER(ctypes.POINTER(ctypes.c_float))),
        ("convTmp1", ctypes.POINTER(ctypes.c_float)),
        ("convTmp2", ctypes.POINTER(ctypes.c_float)),
    ]


def _candidates():
    env = os.environ.get("FEATURES_LIBVL")
    if env:
        yield env
    found = ctypes.util.find_library("vl")
    if found:
        yield found
    for pattern in ("/usr/lib/x86_64-linux-gnu/libvl.so*", "/usr/lib/*/libvl.so*",
                    "/usr/lib/libvl.so*", "/usr/local/lib/libvl.so*"):
        yield from sorted(glob.glob(pattern))


def load_libvl():
    """Return the loaded ``ctypes.CDLL`` of libvl, or None when not installed.

    ``FEATURES_LIBVL`` may name the library file explicitly, or be ``none`` to
    behave as if VLFeat were missing.
    """
    if os.environ.get("FEATURES_LIBVL", "").lower() == "none":
        return None
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "vl_dsift_process") and hasattr(lib, "vl_imsmooth_f"):
            return lib
    return None


def phow_bound_offset(size, max_size):
    """0-based bound offset vl_phow uses to align the frame centres of all sizes."""
    return int(np.floor(1 + 1.5 * (max_size - size))) - 1


class VLFeat:
    """Thin wrapper over the VLFeat C functions that vl_phow's dense path calls."""

    def __init__(self, lib=None):
        lib = lib if lib is not None else load_libvl()
        if lib is None:
            raise OSError("libvl (VLFeat) not found; install libvlfeat-dev")
        self.lib = lib
        c_float_p = ctypes.POINTER(ctypes.c_float)
        lib.vl_dsift_new.restype = ctypes.POINTER(_DsiftFilter)
        lib.vl_dsift_new.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.vl_dsift_delete.restype = None
        lib.vl_dsift_delete.argtypes = [ctypes.POINTER(_DsiftFilter)]
        lib.vl_dsift_process.restype = None
        lib.vl_dsift_process.argtypes = [ctypes.POINTER(_DsiftFilter), c_float_p]
        lib._vl_dsift_update_buffers.restype = None
        lib._vl_dsift_update_buffers.argtypes = [ctypes.POINTER(_DsiftFilter)]
        lib.vl_imsmooth_f.restype = None
        lib.vl_imsmooth_f.argtypes = [c_float_p, ctypes.c_size_t, c_float_p,
                                      ctypes.c_size_t, ctypes.c_size_t,
                                      ctypes.c_size_t, ctypes.c_double,
                                      ctypes.c_double]
        lib.vl_get_version_string.restype = ctypes.c_char_p
        if hasattr(lib, "vl_set_num_threads"):
            lib.vl_set_num_threads.restype = None
            lib.vl_set_num_threads.argtypes = [ctypes.c_size_t]
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        lib.vl_fisher_encode.restype = sz
        lib.vl_fisher_encode.argtypes = [vp, ctypes.c_int, vp, sz, sz, vp, vp, vp, sz,
                                         ctypes.c_int]
        lib.vl_vlad_encode.restype = None
        lib.vl_vlad_encode.argtypes = [vp, ctypes.c_int, vp, sz, sz, vp, sz, vp,
                                       ctypes.c_int]
        lib.vl_kmeans_new.restype = vp
        lib.vl_kmeans_new.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.vl_kmeans_delete.restype = None
        lib.vl_kmeans_delete.argtypes = [vp]
        lib.vl_kmeans_set_centers.restype = None
        lib.vl_kmeans_set_centers.argtypes = [vp, vp, sz, sz]
        lib.vl_kmeans_quantize.restype = None
        lib.vl_kmeans_quantize.argtypes = [vp, vp, vp, vp, sz]

    @property
    def version(self):
        return self.lib.vl_get_version_string().decode()

    def set_num_threads(self, n):
        if hasattr(self.lib, "vl_set_num_threads"):
            self.lib.vl_set_num_threads(n)

    def fisher(self, x, means, covariances, priors, flags=VL_FISHER_FLAG_IMPROVED,
               out=None):
        """``vl_fisher_encode`` (float): x (N, D), means and covariances (K, D), priors
        (K,). Row-major (K, D) is VLFeat's column-major D x K. Returns the 2 K D
        float32 encoding (``out`` if given)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        means = np.ascontiguousarray(means, dtype=np.float32)
        covariances = np.ascontiguousarray(covariances, dtype=np.float32)
        priors = np.ascontiguousarray(priors, dtype=np.float32)
        k, d = means.shape
        if out is None:
            out = np.empty(2 * k * d, np.float32)
        self.lib.vl_fisher_encode(out.ctypes.data, VL_TYPE_FLOAT, means.ctypes.data, d, k,
                                  covariances.ctypes.data, priors.ctypes.data,
                                  x.ctypes.data, x.shape[0], int(flags))
        return out

    def vlad(self, x, centers, assignments, flags=(VL_VLAD_FLAG_NORMALIZE_COMPONENTS
                                                   | VL_VLAD_FLAG_SQUARE_ROOT), out=None):
        """``vl_vlad_encode`` (float): x (N, D), centers (K, D), assignments (N, K)
        weights (VLFeat takes the dense matrix only). Returns the K D encoding."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        centers = np.ascontiguousarray(centers, dtype=np.float32)
        assignments = np.ascontiguousarray(assignments, dtype=np.float32)
        k, d = centers.shape
        if out is None:
            out = np.empty(k * d, np.float32)
        self.lib.vl_vlad_encode(out.ctypes.data, VL_TYPE_FLOAT, centers.ctypes.data, d, k,
                                x.ctypes.data, x.shape[0], assignments.ctypes.data,
                                int(flags))
        return out

    def kmeans_quantizer(self, centers):
        """A callable ``x -> uint32 nearest-center indices`` over ``vl_kmeans_quantize``
        (exact L2, VLFeat's own search); call ``.close()`` when done."""
        return _Quantizer(self.lib, centers)

    def imsmooth(self, im, sigma, out=None):
        """``vl_imsmooth_f``: Gaussian smoothing, continuity padding."""
        im = np.ascontiguousarray(im, dtype=np.float32)
        h, w = im.shape
        if out is None:
            out = np.empty_like(im)
        fp = ctypes.POINTER(ctypes.c_float)
        self.lib.vl_imsmooth_f(out.ctypes.data_as(fp), w, im.ctypes.data_as(fp),
                               w, h, w, float(sigma), float(sigma))
        return out

    def dsift(self, im, *, bin_size, step, bounds=None, fast=True,
              window_size=1.5, output=True):
        """``vl_dsift_process`` on a float32 image already smoothed.

        Returns ``frames`` (N, 3) float64 of x, y, norm (0-based) and the float
        descriptors (N, 128) after VLFeat's normalisation. With
        ``output=False`` only the number of frames is returned and nothing is
        copied out of VLFeat's buffers (to time the computation alone).
        """
        im = np.ascontiguousarray(im, dtype=np.float32)
        h, w = im.shape
        f = self.lib.vl_dsift_new(w, h)
        try:
            d = f.contents
            d.stepX = d.stepY = int(step)
            d.geom.binSizeX = d.geom.binSizeY = int(bin_size)
            if bounds is not None:
                d.boundMinX, d.boundMinY, d.boundMaxX, d.boundMaxY = (
                    int(b) for b in bounds)
            d.useFlatWindow = 1 if fast else 0
            d.windowSize = float(window_size)
            self.lib._vl_dsift_update_buffers(f)
            self.lib.vl_dsift_process(
                f, im.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
            n, ds = d.numFrames, d.descrSize
            if not output:
                return n
            if n == 0:
                return np.zeros((0, 3)), np.zeros((0, ds), np.float32)
            kp = np.ctypeslib.as_array(
                ctypes.cast(d.frames, ctypes.POINTER(ctypes.c_double)),
                shape=(n, 4))
            frames = kp[:, [0, 1, 3]].copy()
            descrs = np.ctypeslib.as_array(d.descrs, shape=(n, ds)).copy()
        finally:
            self.lib.vl_dsift_delete(f)
        return frames, descrs

    def phow(self, im, *, sizes=(4, 6, 8, 10), step=4, magnif=6.0,
             window_size=1.5, contrast_threshold=0.005, sigma=None):
        """vl_phow's gray path: per size smooth, dsift with aligned bounds,
        contrast thresholding, uint8 descriptors (``min(512 x, 255)``, truncated).

        ``sigma(size)`` gives the smoothing; by default
        ``sqrt((size / magnif)**2 - 0.25)`` as the features package uses.
        Returns frames (N, 4) as x, y, size, norm and uint8 descriptors.
        """
        im = np.ascontiguousarray(im, dtype=np.float32)
        h, w = im.shape
        max_size = max(sizes)
        all_frames, all_descrs = [], []
        for size in sizes:
            s = (sigma(size) if sigma is not None
                 else np.sqrt(max((size / magnif) ** 2 - 0.25, 0.0)))
            ims = self.imsmooth(im, s)
            off = phow_bound_offset(size, max_size)
            fr, de = self.dsift(ims, bin_size=size, step=step,
                                bounds=(off, off, w - 1, h - 1),
                                window_size=window_size)
            de8 = np.minimum(512.0 * de, 255.0).astype(np.uint8)
            de8[fr[:, 2] < contrast_threshold] = 0
            out = np.empty((len(fr), 4), np.float32)
            out[:, 0:2] = fr[:, 0:2]
            out[:, 2] = size
            out[:, 3] = fr[:, 2]
            all_frames.append(out)
            all_descrs.append(de8)
        return np.concatenate(all_frames), np.concatenate(all_descrs)


_HOMKERMAP_KERNELS = {"intersection": 0, "chi2": 1, "js": 2}
_HOMKERMAP_WINDOWS = {"uniform": 0, "rectangular": 1}


def homkermap(lib, x, *, kernel="chi2", order=1, period=-1.0, gamma=1.0,
              window="rectangular"):
    """``vl_homogeneouskernelmap_evaluate_f`` on each value of ``x``, as the MATLAB
    ``vl_homkermap`` lays it out: (n, d) -> float32 (n, d * (2 * order + 1)).
    ``period <= 0`` lets VLFeat choose it. The output is zeroed first, as MATLAB's is:
    VLFeat writes only ``order + 1`` zeros for x = 0."""
    new = lib.vl_homogeneouskernelmap_new
    new.restype = ctypes.c_void_p
    new.argtypes = [ctypes.c_int, ctypes.c_double, ctypes.c_size_t, ctypes.c_double,
                    ctypes.c_int]
    evaluate = lib.vl_homogeneouskernelmap_evaluate_f
    evaluate.restype = None
    evaluate.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
                         ctypes.c_double]
    lib.vl_homogeneouskernelmap_delete.restype = None
    lib.vl_homogeneouskernelmap_delete.argtypes = [ctypes.c_void_p]
    x = np.atleast_2d(np.asarray(x, np.float64))
    dim = 2 * order + 1
    out = np.zeros((x.size, dim), np.float32)
    m = new(_HOMKERMAP_KERNELS[kernel], gamma, order, period, _HOMKERMAP_WINDOWS[window])
    try:
        base = out.ctypes.data
        for i, v in enumerate(x.reshape(-1)):
            evaluate(m, ctypes.cast(base + 4 * dim * i, ctypes.POINTER(ctypes.c_float)), 1,
                     float(v))
    finally:
        lib.vl_homogeneouskernelmap_delete(m)
    return out.reshape(x.shape[0], x.shape[1] * dim)


class _Quantizer:
    def __init__(self, lib, centers):
        self.lib = lib
        self.centers = np.ascontiguousarray(centers, dtype=np.float32)
        self.k, self.d = self.centers.shape
        self.handle = lib.vl_kmeans_new(VL_TYPE_FLOAT, VL_DISTANCE_L2)
        lib.vl_kmeans_set_centers(self.handle, self.centers.ctypes.data, self.d, self.k)

    def __call__(self, x, out=None):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if out is None:
            out = np.empty(x.shape[0], np.uint32)
        self.lib.vl_kmeans_quantize(self.handle, out.ctypes.data, None, x.ctypes.data,
                                    x.shape[0])
        return out

    def close(self):
        if self.handle:
            self.lib.vl_kmeans_delete(self.handle)
            self.handle = None

    __del__ = close

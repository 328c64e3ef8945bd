"""Build the Cython kernels in ext/ into features._ext.*

Set FEATURES_BOUNDSCHECK=1 to compile the kernels with bounds and wraparound
checks on (the kernel tests are run once this way).

The kernels are translated and compiled in parallel, one job per core this process may
use (``pip install .`` took about twice as long with one after another); set
FEATURES_BUILD_JOBS=N to use N jobs.

A kernel whose name ends in ``_avx2`` is built with AVX2 on x86-64, one ending in
``_avx512`` with AVX-512 (GCC, Clang or MSVC flags); the package picks either only on a CPU
that has those instructions, so the build stays portable.
"""
import os
import platform
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

checked = os.environ.get("FEATURES_BOUNDSCHECK", "") == "1"
directives = {
    "language_level": 3,
    "boundscheck": checked,
    "wraparound": checked,
    "cdivision": True,
    "initializedcheck": checked,
}
compile_args = ["-O3"] if not checked else ["-O1", "-g"]


def build_jobs() -> int:
    if os.environ.get("FEATURES_BUILD_JOBS"):
        return max(1, int(os.environ["FEATURES_BUILD_JOBS"]))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


jobs = build_jobs()


def simd_args(stem: str) -> list:
    """Extra flags of the kernels built for a wider instruction set than the platform's
    baseline (chosen at run time by the CPU they find; see ext/_dsift.pyx): a name ending in
    ``_avx2`` is built with AVX2, one ending in ``_avx512`` with AVX-512 F, BW, VL and DQ.
    Neither may contract a * b + c into a fused multiply-add: its single rounding would
    change the results. ``-mno-fma`` alone does not prevent it under AVX-512, whose
    instructions include their own FMA; ``-ffp-contract=off`` does, for both."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    if stem.endswith("_avx2"):
        if sys.platform == "win32":
            return ["/arch:AVX2"]
        return ["-mavx2", "-mno-fma", "-ffp-contract=off"]
    if stem.endswith("_avx512"):
        if sys.platform == "win32":
            return ["/arch:AVX512"]
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mno-fma",
                "-ffp-contract=off"]
    return []


def exact_args(stem: str) -> list:
    """Extra flags of the kernels whose vector loops promise the bits of their scalar ones
    (``_area``: OpenCV's): no contraction into fused multiply-adds, which its AVX-512 loops
    (and the baseline of aarch64) would otherwise get."""
    if stem == "_area" and sys.platform != "win32":
        return ["-ffp-contract=off"]
    return []


extensions = [
    Extension(
        f"features._ext.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args + simd_args(pyx.stem) + exact_args(pyx.stem),
    )
    for pyx in sorted(Path("ext").glob("*.pyx"))
]

# A checked build generates its C in a separate folder and always regenerates it, so the
# checks are really compiled in (and the unchecked C is never reused for it).
# build_ext's `parallel` compiles the extensions in a pool of threads (the compiler runs as
# a subprocess), cythonize's `nthreads` translates the .pyx files in a pool of processes.
setup(ext_modules=cythonize(extensions, compiler_directives=directives, force=checked,
                            build_dir="build/cython-checked" if checked else "build/cython",
                            nthreads=jobs if jobs > 1 else 0),
      options={"build_ext": {"parallel": jobs}})

"""Build the Cython kernels in ext/ into features._ext.*

Set FEATURES_BOUNDSCHECK=1 to compile the kernels with bounds and wraparound
checks on (the kernel tests are run once this way).
"""
import os
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

extensions = [
    Extension(
        f"features._ext.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
    )
    for pyx in sorted(Path("ext").glob("*.pyx"))
]

# A checked build generates its C in a separate folder and always regenerates it, so the
# checks are really compiled in (and the unchecked C is never reused for it).
setup(ext_modules=cythonize(extensions, compiler_directives=directives, force=checked,
                            build_dir="build/cython-checked" if checked else "build/cython"))

"""Compiled kernels (built from ext/*.pyx). They know nothing of files, configs or HDF5."""

# The dense SIFT kernel compiled for AVX2 (without FMA): setup.py builds this module with
# -mavx2 on x86-64; features.extract.dense uses it where the CPU has AVX2. One source.
include "_dsift.pyx"

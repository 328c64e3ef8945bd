# The dense SIFT kernel compiled for AVX-512 (F, BW, VL, DQ; no FMA contraction): setup.py
# builds this module with those flags on x86-64; features.extract.dense uses it where the
# CPU has them. One source.
include "_dsift.pyx"

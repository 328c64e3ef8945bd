"""The homogeneous kernel map (Vedaldi and Zisserman, "Efficient additive kernels via
explicit feature maps", CVPR 2010 / PAMI 2012).

An additive homogeneous kernel ``K(x, y) = sum_d k(x_d, y_d)`` (chi2, intersection,
Jensen-Shannon) is approximated by a linear one: each coordinate ``x`` becomes
``2 * order + 1`` values ``psi(x)`` with ``<psi(x), psi(y)> ~ k(x, y)``, so that a linear
classifier on the mapped vectors behaves as a kernel machine on the originals.

With ``lambda`` the frequency and ``kappa(lambda)`` the kernel's spectrum (chi2:
``sech(pi lambda)``, intersection: ``2 / (pi (1 + 4 lambda**2))``, JS:
``2 / (log(4) cosh(pi lambda) (1 + 4 lambda**2))``), the spectrum is sampled every
``L = 2 pi / period`` and, for ``x > 0``::

    psi_0(x)    = sqrt(x**gamma L kappa_0)
    psi_2j-1(x) = sqrt(2 x**gamma L kappa_j) cos(f_j L log x),   j = 1 .. order
    psi_2j(x)   = sqrt(2 x**gamma L kappa_j) sin(f_j L log x)

``psi(0) = 0`` (so a sparse vector stays sparse) and ``psi(-x) = -psi(x)``.

Parameters follow VLFeat's ``vl_homkermap`` (0.9.21): the same kernels, ``gamma``, the
``"rectangular"`` window by default (the spectrum convolved with the window's sinc and
clipped at zero, which is what ``vl_homkermap`` does unless asked for ``"uniform"``), the
same default period for each kernel and window, the same skipping of frequencies whose
smoothed spectrum is zero, and the same layout: each input coordinate expands into
``2 * order + 1`` consecutive output values (``psi_0``, then cosine and sine per order).
VLFeat evaluates the map by linear interpolation in a table over the mantissa and exponent
of ``x`` (and returns zeros below ``2**-20`` and above ``2**8``); this module evaluates it
in closed form, so values agree with VLFeat to its interpolation error
(``tests/test_kernel_map.py`` measures it through ctypes).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..exceptions import ParameterError
from .._ext import load

__all__ = ["KERNELS", "WINDOWS", "HomogeneousKernelMap", "homogeneous_kernel_map",
           "default_period"]

KERNELS = ("chi2", "intersection", "js")
WINDOWS = ("rectangular", "uniform")


def _spectrum(kernel, omega):
    omega = np.asarray(omega, np.float64)
    if kernel == "chi2":
        return 1.0 / np.cosh(np.pi * omega)
    if kernel == "intersection":
        return (2.0 / np.pi) / (1.0 + 4.0 * omega ** 2)
    return (2.0 / math.log(4.0)) / (np.cosh(np.pi * omega) * (1.0 + 4.0 * omega ** 2))


def default_period(kernel, order, window="rectangular") -> float:
    """The period VLFeat picks when none is given (an empirical fit in the PAMI paper)."""
    _check_choice("kernel", kernel, KERNELS)
    _check_choice("window", window, WINDOWS)
    if window == "uniform":
        period = {"chi2": 5.86 * math.sqrt(order) + 3.65,
                  "js": 6.64 * math.sqrt(order) + 7.24,
                  "intersection": 2.38 * math.log(order + 0.8) + 5.6}[kernel]
    else:
        period = {"chi2": 8.80 * math.sqrt(order + 4.44) - 12.6,
                  "js": 9.63 * math.sqrt(order + 1.0) - 2.93,
                  "intersection": 2.0 * math.log(order + 0.99) + 3.52}[kernel]
    return max(period, 1.0)


def _smoothed_spectrum(kernel, window, period, omega):
    """The spectrum seen through the window that truncates the kernel's signature.

    For the rectangular window of width ``period`` this is the convolution of the spectrum
    with ``period / (2 pi) sinc(period omega / 2)``, computed as a Riemann sum over
    ``|omega'| <= 2 / (period * 0.01)`` in 2049 steps, then clipped at zero (a spectrum is
    non-negative)."""
    if window == "uniform":
        return float(_spectrum(kernel, omega))
    reach = 2.0 / (period * 1e-2)
    step = 2.0 * reach / (2 * 1024.0 + 1)
    grid = -reach + step * np.arange(2 * 1024 + 2)
    grid = grid[grid <= reach * (1 + 1e-12)]
    arg = (period / 2.0) * grid
    sinc = np.where(arg == 0, 1.0, np.sin(arg) / np.where(arg == 0, 1.0, arg))
    value = step * np.sum(sinc * (period / (2 * np.pi)) * _spectrum(kernel, grid + omega))
    return max(float(value), 0.0)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


class HomogeneousKernelMap:
    """A homogeneous kernel map with fixed parameters; :meth:`transform` applies it.

    Parameters
    ----------
    kernel : "chi2", "intersection" or "js"
    order : int >= 0
        Each value expands into ``2 * order + 1`` values.
    period : float > 0, optional
        Period of the sampled spectrum; by default VLFeat's empirical choice for the kernel,
        order and window (:func:`default_period`).
    gamma : float > 0
        Homogeneity degree (1 for the standard kernels).
    window : "rectangular" or "uniform"
    """

    def __init__(self, kernel="chi2", order=1, period=None, gamma=1.0, window="rectangular"):
        _check_choice("kernel", kernel, KERNELS)
        _check_choice("window", window, WINDOWS)
        if not isinstance(order, numbers.Integral) or order < 0:
            raise ParameterError(f"order must be an integer >= 0, got {order!r}")
        if not gamma > 0:
            raise ParameterError(f"gamma must be > 0, got {gamma!r}")
        if period is None:
            period = default_period(kernel, order, window)
        elif not period > 0:
            raise ParameterError(f"period must be > 0, got {period!r}")
        self.kernel, self.order, self.window = kernel, int(order), window
        self.period, self.gamma = float(period), float(gamma)
        self.L = 2.0 * math.pi / self.period
        # Sampled spectrum. A frequency whose smoothed spectrum is zero carries nothing, so
        # it is skipped (at most up to 3x the component's index), as VLFeat does.
        kappa, freq = [], []
        j = 0
        while len(kappa) <= self.order:
            i = len(kappa)
            value = _smoothed_spectrum(kernel, window, self.period, j * self.L)
            j += 1
            if value > 0 or j >= 3 * i:
                kappa.append(value)
                freq.append(j - 1)
        self.kappa = np.array(kappa, np.float64)
        self.freq = np.array(freq, np.float64)

    @property
    def dimension(self) -> int:
        """Output values per input value."""
        return 2 * self.order + 1

    def params(self) -> dict:
        return {"kernel": self.kernel, "order": self.order, "period": self.period,
                "gamma": self.gamma, "window": self.window}

    def transform(self, x, *, n_threads=1) -> np.ndarray:
        """Map float values: shape ``(..., d)`` gives float32 ``(..., d * (2 * order + 1))``,
        each value's expansion consecutive (VLFeat's layout)."""
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.number):
            raise ParameterError(f"x must be numeric, got dtype {x.dtype}")
        flat = np.ascontiguousarray(x, np.float32).reshape(-1)
        if not np.isfinite(flat).all():
            raise ParameterError("x holds NaN or infinite values")
        out = np.empty((len(flat), self.dimension), np.float32)
        load("_homkermap", "kernel map").homkermap(flat, self.kappa, self.freq, self.L,
                                                   self.gamma, out, int(n_threads))
        shape = x.shape[:-1] + (x.shape[-1] * self.dimension,) if x.ndim else (self.dimension,)
        return out.reshape(shape)

    def transform_sparse(self, indices, values, *, n_threads=1):
        """Map the non-zeros of a sparse vector (or of CSR rows): column ``c`` becomes columns
        ``c * (2 * order + 1) + t``. Returns (int64 indices, float32 values); zeros map to
        zeros, so nothing else changes."""
        indices = np.asarray(indices)
        mapped = self.transform(np.asarray(values, np.float32).reshape(-1, 1),
                                n_threads=n_threads)
        new = (indices.astype(np.int64)[:, None] * self.dimension
               + np.arange(self.dimension)).reshape(-1)
        return new, mapped.reshape(-1)

    def reference(self, x) -> np.ndarray:
        """The same map in plain NumPy (float64 inside): the tests' reference."""
        x = np.asarray(x, np.float64)
        ax = np.abs(x)[..., None]
        sign = np.where(x < 0, -1.0, 1.0)[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            lxg = self.L * ax ** self.gamma
            t = self.L * np.log(ax)
            cols = [np.sqrt(lxg * self.kappa[0])]
            for j in range(1, self.order + 1):
                base = np.sqrt(2.0 * lxg * self.kappa[j])
                cols += [base * np.cos(self.freq[j] * t), base * np.sin(self.freq[j] * t)]
        out = np.concatenate(cols, axis=-1) * sign
        out[np.broadcast_to(ax == 0, out.shape)] = 0.0
        shape = x.shape[:-1] + (x.shape[-1] * self.dimension,) if x.ndim else (self.dimension,)
        return out.astype(np.float32).reshape(shape)


def homogeneous_kernel_map(x, kernel="chi2", order=1, period=None, gamma=1.0,
                           window="rectangular", *, n_threads=1) -> np.ndarray:
    """``vl_homkermap`` on the rows of ``x``: (..., d) -> float32 (..., d * (2 * order + 1)).

    See :class:`HomogeneousKernelMap` for the parameters.
    """
    return HomogeneousKernelMap(kernel, order, period, gamma, window).transform(
        x, n_threads=n_threads)

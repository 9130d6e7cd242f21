"""float64 references and the tolerance check shared by the ops tests."""

from __future__ import annotations

import math

import numpy as np

EPS = 2.0 ** -24          # float32 unit roundoff
TINY = 2.0 ** -126        # smallest normal float32


def logsoftmax64(x, axis):
    x64 = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.max(x64, axis=axis, keepdims=True, initial=-np.inf)
        return x64 - m - np.log(np.sum(np.exp(x64 - m), axis=axis, keepdims=True))


def softmax64(x, axis):
    x64 = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.max(x64, axis=axis, keepdims=True, initial=-np.inf)
        e = np.exp(x64 - m)
        return e / np.sum(e, axis=axis, keepdims=True)


def layer_norm64(x, w, b, epsilon, axis):
    x64 = np.asarray(x, np.float64)
    axes = tuple(range(axis % x.ndim, x.ndim))
    with np.errstate(invalid="ignore", over="ignore"):
        mean = x64.mean(axis=axes, keepdims=True)
        var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (x64 - mean) / np.sqrt(var + epsilon) * w
        return y if b is None else y + b


def exp64(x):
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(x, np.float64))


def sigmoid64(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def gelu_erf64(x):
    v = np.asarray(x, np.float64)
    return np.vectorize(lambda t: 0.5 * t * math.erfc(-t / math.sqrt(2.0)), otypes=[np.float64])(v)


def gelu_tanh64(x):
    """0.5 x (1 + tanh u), written x / (1 + e**(-2u)) (the same function), because 1 + tanh u
    cancels to 0 even in float64 once x < -6."""
    v = np.asarray(x, np.float64)
    u = math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)
    with np.errstate(over="ignore"):
        return v / (1.0 + np.exp(-2.0 * u))


def assert_within(y, ref, bound, what=""):
    """y (float32) matches the float64 `ref`: NaN where ref is NaN, the same infinities where
    ref rounds to an infinity in float32, and |y - ref| <= bound elsewhere (bound: array or
    scalar, broadcast against ref)."""
    y = np.asarray(y)
    ref = np.asarray(ref, np.float64)
    assert y.dtype == np.float32, what
    assert y.shape == ref.shape, (what, y.shape, ref.shape)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(y), nan, err_msg=f"{what}: NaN positions")
    with np.errstate(over="ignore"):
        ref32 = ref.astype(np.float32)
    inf = np.isinf(ref32)
    np.testing.assert_array_equal(y[inf], ref32[inf], err_msg=f"{what}: infinities")
    ok = ~nan & ~inf
    err = np.abs(y[ok].astype(np.float64) - ref[ok])
    limit = np.broadcast_to(np.asarray(bound, np.float64), ref.shape)[ok]
    if err.size:
        worst = int(np.argmax(err - limit))
        assert np.all(err <= limit), (f"{what}: error {err[worst]:.3g} > bound {limit[worst]:.3g} "
                                      f"at ref {ref[ok][worst]!r}, y {y[ok][worst]!r}")

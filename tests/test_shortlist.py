"""PreparedB.select_columns: a shortlisted output layer equals the full product's columns."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import allows_min_in_b, available_paths, backend_of, impl_for, ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gemm

K, N = 53, 150


def _ids_cases(n: int) -> dict[str, np.ndarray | list]:
    rng = np.random.default_rng(0)
    return {
        "sorted": np.arange(3, n, 7),
        "shuffled": rng.permutation(n)[: n // 3],
        "reversed": np.arange(n)[::-1],
        "repeats": np.array([5, 5, 0, n - 1, 5, 0, 17, 17, 17]),
        "single": [n // 2],
        "first": [0],
        "last": [n - 1],
        "whole range": np.arange(n),
        "python list": [int(i) for i in rng.integers(0, n, 40)],
        "int32 ids": rng.integers(0, n, 64).astype(np.int32),
        "uint16 ids": rng.integers(0, n, 10).astype(np.uint16),
        "strided view": np.arange(n)[::-3],
    }


IDS_CASES = _ids_cases(N)


@pytest.mark.parametrize("case", list(IDS_CASES), ids=list(IDS_CASES))
def test_select_columns_int(cpu_path, case):
    ids = IDS_CASES[case]
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (7, K), dtype=np.int8)
    b = rng.integers(-128 if allows_min_in_b(cpu_path) else -127, 128, (K, N), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    full = gemm.gemm_i8(a, pb, backend=backend_of(cpu_path))
    sel = pb.select_columns(ids)
    idx = np.asarray(ids, np.intp)
    assert sel.shape == (K, len(idx))
    np.testing.assert_array_equal(sel.quantized(), b[:, idx])
    np.testing.assert_array_equal(sel.col_sums, pb.col_sums[idx])
    c = gemm.gemm_i8(a, sel, backend=backend_of(cpu_path))
    np.testing.assert_array_equal(c, full[:, idx])
    np.testing.assert_array_equal(c, ref(a, b[:, idx]))


@pytest.mark.parametrize("case", ["shuffled", "repeats", "single", "whole range"])
def test_select_columns_float_per_column(cpu_path, case):
    ids = np.asarray(IDS_CASES[case], np.intp)
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, K)).astype(np.float32)
    w = (rng.standard_normal((K, N)) * np.logspace(-2, 1, N)[None, :]).astype(np.float32)
    qb = (127.0 / np.abs(w).max(axis=0)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    pb = gemm.prepare_b(w, qb)
    full = gemm.gemm_i8(a, pb, a_quant_mult=30.0, bias=bias, relu=True,
                        backend=backend_of(cpu_path))
    sel = pb.select_columns(ids)
    np.testing.assert_array_equal(sel.quant_mult, qb[ids])
    c = gemm.gemm_i8(a, sel, a_quant_mult=30.0, bias=bias[ids], relu=True,
                     backend=backend_of(cpu_path))
    # Same integers, same multipliers, same epilogue: bit-identical columns.
    np.testing.assert_array_equal(c, full[:, ids])
    # And equal to preparing only those columns of W from scratch.
    direct = gemm.gemm_i8(a, gemm.prepare_b(np.ascontiguousarray(w[:, ids]), qb[ids]),
                          a_quant_mult=30.0, bias=bias[ids], relu=True,
                          backend=backend_of(cpu_path))
    np.testing.assert_array_equal(c, direct)


def test_select_columns_scalar_quant_mult():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, K)).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    pb = gemm.prepare_b(w, 40.0)
    ids = [9, 2, 2, 140]
    full = gemm.gemm_i8(a, pb, a_quant_mult=25.0)
    np.testing.assert_array_equal(gemm.gemm_i8(a, pb.select_columns(ids), a_quant_mult=25.0),
                                  full[:, ids])


def test_select_columns_after_use_and_nested(cpu_path):
    """Selecting from a B already packed for a path, and selecting from a selection."""
    rng = np.random.default_rng(4)
    a = rng.integers(-128, 128, (5, K), dtype=np.int8)
    b = rng.integers(-127, 128, (K, N), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    full = gemm.gemm_i8(a, pb, backend=backend_of(cpu_path))   # packs pb for this path
    first = pb.select_columns(np.arange(10, 120))
    second = first.select_columns([0, 109, 50, 50])
    np.testing.assert_array_equal(gemm.gemm_i8(a, first, backend=backend_of(cpu_path)),
                                  full[:, 10:120])
    np.testing.assert_array_equal(gemm.gemm_i8(a, second, backend=backend_of(cpu_path)),
                                  full[:, [10, 119, 60, 60]])
    # The parent is unchanged by selecting.
    np.testing.assert_array_equal(gemm.gemm_i8(a, pb, backend=backend_of(cpu_path)), full)


def test_one_prepared_b_on_every_path_then_selected():
    """One PreparedB serves paths whose panels differ in layout but not in width (cpu:avx2's
    int8 and cpu:avx2-i16's int16 panels, both 16 columns): each path gets its own panels, and a
    selection from it works on every path."""
    paths = available_paths()
    rng = np.random.default_rng(6)
    a = rng.integers(-128, 128, (6, K), dtype=np.int8)
    b = rng.integers(-127, 128, (K, N), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    for _ in range(2):   # the second round reuses the panels the first one packed
        for path in paths:
            np.testing.assert_array_equal(gemm.gemm_i8(a, pb, backend=backend_of(path)),
                                          ref(a, b), err_msg=path)
    ids = [N - 1, 3, 3, 77, 0]
    sel = pb.select_columns(ids)
    for path in reversed(paths):
        np.testing.assert_array_equal(gemm.gemm_i8(a, sel, backend=backend_of(path)),
                                      ref(a, b[:, ids]), err_msg=path)
    if {"avx2", "avx2-i16"} <= set(paths):
        assert (impl_for("avx2").entry.default_tile.nr
                == impl_for("avx2-i16").entry.default_tile.nr), "the test relies on equal NR"


def test_select_columns_drops_min_for_sign_trick_paths(cpu_path):
    """A B with -128 only in columns not selected can run on every path; selecting the -128
    column keeps the sign-trick paths' rejection."""
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (4, K), dtype=np.int8)
    b = rng.integers(-127, 128, (K, N), dtype=np.int8)
    b[7, 3] = -128
    pb = gemm.prepare_b_quantized(b)
    clean = pb.select_columns([0, 1, 2, 4, 5])
    np.testing.assert_array_equal(gemm.gemm_i8(a, clean, backend=backend_of(cpu_path)),
                                  ref(a, b[:, [0, 1, 2, 4, 5]]))
    dirty = pb.select_columns([1, 3])
    if allows_min_in_b(cpu_path):
        np.testing.assert_array_equal(gemm.gemm_i8(a, dirty, backend=backend_of(cpu_path)),
                                      ref(a, b[:, [1, 3]]))
    else:
        with pytest.raises(ValueError, match="B"):
            gemm.gemm_i8(a, dirty, backend=backend_of(cpu_path))


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 80), data=st.data())
def test_select_columns_property(n, data):
    ids = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=100), label="ids")
    rng = np.random.default_rng(n)
    a = rng.integers(-128, 128, (3, 19), dtype=np.int8)
    b = rng.integers(-128, 128, (19, n), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    np.testing.assert_array_equal(gemm.gemm_i8(a, pb.select_columns(ids), backend="cpu:generic"),
                                  ref(a, b)[:, ids])


# ---------------------------------------------------------------------------------------------
# Bad ids.


@pytest.mark.parametrize("ids", [[N], [-1], [0, 1, N + 5], np.array([2, -3])],
                         ids=["N", "-1", "N+5 among valid", "negative in array"])
def test_out_of_range_ids(ids):
    pb = gemm.prepare_b_quantized(np.zeros((K, N), np.int8))
    with pytest.raises(ValueError, match="ids"):
        pb.select_columns(ids)


@pytest.mark.parametrize("ids", [[1.0, 2.0], np.array([0.5]), ["a", "b"], np.array([True, False])],
                         ids=["float list", "float array", "strings", "bools"])
def test_non_integer_ids(ids):
    pb = gemm.prepare_b_quantized(np.zeros((K, N), np.int8))
    with pytest.raises(TypeError, match="ids"):
        pb.select_columns(ids)


def test_ids_must_be_one_dimensional():
    pb = gemm.prepare_b_quantized(np.zeros((K, N), np.int8))
    with pytest.raises(ValueError, match="ids"):
        pb.select_columns(np.zeros((2, 2), np.intp))


@pytest.mark.parametrize("ids", [[], np.array([], np.int64)], ids=["empty list", "empty array"])
def test_empty_selection(ids):
    """'any count' includes zero columns: an M x 0 result of the right dtype."""
    pb = gemm.prepare_b_quantized(np.ones((K, N), np.int8), quant_mult=2.0)
    sel = pb.select_columns(ids)
    assert sel.shape == (K, 0)
    assert gemm.gemm_i8(np.ones((3, K), np.int8), sel).shape == (3, 0)
    c = gemm.gemm_i8(np.ones((3, K), np.float32), sel, a_quant_mult=1.0)
    assert c.shape == (3, 0) and c.dtype == np.float32


@pytest.mark.parametrize("epilogue", ["int32", "out_scale", "out_scale+bias+relu"])
def test_columns_agree_between_whole_and_partial_panels(cpu_path, epilogue):
    """Whole panels of C are finished in the micro-kernel's registers, a partial last panel
    through a tile buffer: with zero points and per-column scales, each column comes out bit for
    bit the same whichever way it was computed (reversing the columns moves the partial panel's
    columns into whole panels and back)."""
    rng = np.random.default_rng(7)
    n = 150
    a = rng.integers(0, 256, (9, K), dtype=np.uint8)
    b = rng.integers(-128 if allows_min_in_b(cpu_path) else -127, 128, (K, n), dtype=np.int8)
    zb = rng.integers(-128, 128, n).astype(np.int32)
    scale = rng.uniform(-0.02, 0.02, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    options = {"int32": {}, "out_scale": {"out_scale": scale},
               "out_scale+bias+relu": {"out_scale": scale, "bias": bias, "relu": True}}[epilogue]
    pb = gemm.prepare_b_quantized(b)
    ids = np.arange(n)[::-1]
    picked = {key: value[ids] if isinstance(value, np.ndarray) else value
              for key, value in options.items()}
    full = gemm.gemm_i8(a, pb, a_zero_point=131, b_zero_point=zb, backend=backend_of(cpu_path),
                        **options)
    reversed_ = gemm.gemm_i8(a, pb.select_columns(ids), a_zero_point=131, b_zero_point=zb[ids],
                             backend=backend_of(cpu_path), **picked)
    np.testing.assert_array_equal(reversed_, full[:, ids])
    exact = (a.astype(np.int64) - 131) @ (b.astype(np.int64) - zb)
    if epilogue == "int32":
        np.testing.assert_array_equal(full, exact)
    else:
        expected = exact.astype(np.float32) * scale + (bias if "bias" in options else 0)
        if "relu" in options:
            expected = np.maximum(expected, 0)
        np.testing.assert_allclose(full, expected, rtol=1e-6, atol=1e-6)

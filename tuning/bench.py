"""Timing real gemm_i8 calls for the search: the `bench=` and `verify=` of tuning.search.

`GemmBench(impl, shape, limits)` builds random int8 operands of the shape once, and the exact
reference product. `verify(config)` runs the config once and raises `WrongAnswer` unless the
result is bit-identical; `bench(config)` returns the seconds per call of one sample, a batch of
calls long enough (`target_s`) for the clock and the machine's noise to average out. A config's
first `bench` call first times three untimed calls to size that batch; with verify's call they
warm the config up, so the search runs with warmup=0. Calls go through the public
`gemm.gemm_i8` with the private `_params=` override, so what is timed is what users run, host
work included: gemm_i8 gives these calls the same path as a user's (on the GPU, the kept plan of
a repeated call). A slower path for the tuner's calls once added 3 us (CPU) and 5 us (GPU) per
call, so small GPU calls timed the host and every tile looked alike.

A GPU implementation is timed on data already in GPU memory (A a GpuArray, B a GpuPreparedB,
C written to a GpuArray), each batch ended by waiting for the GPU: what a caller chaining GPU
calls runs. Repeated calls with the same arrays and configuration run their kept plan, as a
caller's repeated calls do (gemm/wgsl/driver.py), so the host's planning does not blur the
kernels' differences. With numpy operands every call would also upload A and read C back, costs no tile
size changes, which hid the tiles' differences (at 4096^3 the transfers took 8 of the 9 ms).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

import dispatch
import gemm

from .search import WrongAnswer


def _filled(array: np.ndarray, value) -> np.ndarray:
    array.fill(value)
    return array


class GemmBench:
    def __init__(self, impl: dispatch.Implementation, shape: tuple, limits: Mapping[str, Any],
                 *, seed: int = 0, target_s: float | None = None):
        m, k, n = shape
        rng = np.random.default_rng(seed)
        self.impl = impl
        self.space = impl.tuning_space
        self.a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        # -127: B from prepare_b never holds -128, and the sign-trick paths reject it.
        b = rng.integers(-127, 128, (k, n), dtype=np.int8)
        self.b = gemm.prepare_b_quantized(b)
        # Exact in float64: |sum| <= 128 * 127 * K stays far below 2**53 for any real K.
        self.reference = (self.a.astype(np.float64) @ b.astype(np.float64)).astype(np.int32)
        self.on_gpu = impl.backend == "gpu"
        if self.on_gpu:
            from dispatch import gpu
            from dispatch.gpu_array import GpuArray

            self._operands = (GpuArray.from_numpy(self.a), self.b.to_gpu())
            self._wait = gpu.synchronize
            # -1 everywhere, so a config that writes nothing cannot pass on a previous result
            self._fresh_out = lambda: GpuArray.from_numpy(np.full((m, n), -1, np.int32))
            self._result = lambda out: out.numpy()
        else:
            self._operands = (self.a, self.b)
            self._wait = lambda: None
            # Aligned, as gemm_i8's own results are: the c_stores parameter streams only
            # into aligned rows.
            self._fresh_out = lambda: _filled(gemm.aligned_empty((m, n), np.int32), -1)
            self._result = lambda out: out
        self.out = self._fresh_out()
        self.kwargs = {"backend": impl.qualified_name}
        if "threads" in limits:
            self.kwargs["threads"] = limits["threads"]
        # Samples of 2 ms on the CPU; 20 ms on the GPU, where a wait for the GPU ends each one
        # and 2 ms samples ranked configs differently from one run to the next.
        self.target_s = target_s or (0.02 if self.on_gpu else 0.002)
        self._batch: dict[str, int] = {}

    def _call(self, params) -> None:
        gemm.gemm_i8(*self._operands, out=self.out, _params=params, **self.kwargs)

    def verify(self, config) -> None:
        self.out = self._fresh_out()
        self._call(self.space.realize(config))
        got = self._result(self.out)
        if not np.array_equal(got, self.reference):
            bad = int(np.count_nonzero(got != self.reference))
            raise WrongAnswer(f"{bad} of {got.size} results differ from the reference")

    def bench(self, config) -> float:
        params = self.space.realize(config)
        key = dispatch.config_text(config)
        batch = self._batch.get(key)
        if batch is None:
            # The fastest of three calls: a first call may compile or wake the thread pool.
            dt = math.inf
            self._wait()
            for _ in range(3):
                t0 = time.perf_counter()
                self._call(params)
                self._wait()
                dt = min(dt, time.perf_counter() - t0)
            batch = self._batch[key] = max(1, min(1000, int(self.target_s / max(dt, 1e-7))))
        if self.on_gpu:
            # An untimed batch first: a GPU that idled while the search ran on the CPU has
            # dropped its clocks (an H200 timed small calls up to 2x slower without this).
            for _ in range(batch):
                self._call(params)
        self._wait()
        t0 = time.perf_counter()
        for _ in range(batch):
            self._call(params)
        self._wait()
        return (time.perf_counter() - t0) / batch


def compare(bench: GemmBench, configs: dict[str, dict], repeats: int) -> dict[str, float]:
    """Median seconds per call of each named config, timed interleaved (every round samples
    each config once, so the machine's noise hits them alike)."""
    for config in configs.values():
        bench.bench(config)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(repeats):
        for name, config in configs.items():
            samples[name].append(bench.bench(config))
    return {name: float(np.median(s)) for name, s in samples.items()}

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

On the GPU each sample is also taken against a reference, the heuristic default
(`Referenced`): a GPU's clocks follow its load, and the tuner's small calls leave it mostly idle.
On the device's H200 the SM clock fell from 1980 to 345 MHz in steps over ~2 s while the tuner
ran, and the same default call went from 13 to 45-60 us per call and stayed there (nvidia-smi
beside a scratch script): samples taken seconds apart compared clocks, not configurations, and a
search abandoned good candidates as "2x slower than the best" because the best had been timed
at a higher clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import dispatch
import gemm

from .search import WrongAnswer

# Seconds to let numpy's BLAS threads go idle after the reference product (see GemmBench).
BLAS_IDLE_S = 0.3


def _filled(array: np.ndarray, value) -> np.ndarray:
    array.fill(value)
    return array


class Referenced:
    """Samples of a machine whose speed drifts, made comparable: each candidate's batch is timed
    between two half batches of a fixed reference configuration, and its time is scaled by the
    reference's speed then against the reference's speed at the start. A configuration that is
    20% faster than the reference then samples 20% below the reference's base time, whatever
    the clock did in between.

    `sample(timed, config)`: `timed(config, share) -> seconds per call` times one batch (`share`
    of the config's usual batch). The base is the fastest of three reference batches, timed at
    the first sample. If the two halves differ by more than `settle` (the clock stepped during
    the sample, so their mean is no measure of it), the sample is taken again, up to `attempts`
    times, and the one whose halves agreed best is kept.
    """

    def __init__(self, reference, *, settle: float = 0.1, attempts: int = 3):
        self.reference = reference
        self.settle, self.attempts = settle, attempts
        self.base: float | None = None

    def sample(self, timed: Callable[[Any, float], float], config) -> float:
        if self.base is None:
            self.base = min(timed(self.reference, 1.0) for _ in range(3))
        best_spread, best = math.inf, math.nan
        for _ in range(self.attempts):
            before = timed(self.reference, 0.5)
            t = timed(config, 1.0)
            after = timed(self.reference, 0.5)
            spread = abs(after - before) / min(after, before)
            if spread < best_spread:
                best_spread, best = spread, t * self.base / ((before + after) / 2)
            if spread <= self.settle:
                break
        return best


class GemmBench:
    def __init__(self, impl: dispatch.Implementation, shape: tuple, limits: Mapping[str, Any],
                 *, seed: int = 0, target_s: float | None = None,
                 referenced: bool | None = None):
        m, k, n = shape
        rng = np.random.default_rng(seed)
        self.shape = tuple(shape)
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
            # numpy's BLAS threads spin for a while after the reference product, and on a
            # machine with few cores the CPU kernels' threads then wait for a core: on this
            # project's 2-core development machine every 2-thread call took 4-5 ms (one
            # scheduler tick) instead of 40-200 us for the next ~0.1 s, which was the default's
            # first samples.
            time.sleep(BLAS_IDLE_S)
            self._operands = (self.a, self.b)
            self._wait = lambda: None
            # Aligned, as gemm_i8's own results are where the call streams: the c_stores
            # parameter streams only into aligned rows.
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
        self._compiles: dict[str, Any] = {}   # config text -> its background compile
        # On the GPU, samples against the heuristic default (see the module's docstring). Not
        # on the CPU: its noise is other work taking a core for a while, not a clock that
        # drifts, and a reference would halve the samples a search can take.
        if referenced is None:
            referenced = self.on_gpu
        # (Given _timed at each sample, not kept: a GemmBench in a reference cycle would hold
        # its GPU arrays until the collector ran.)
        self._referenced = Referenced(self.space.default(shape, limits)) if referenced else None

    def prefetch(self, configs) -> None:
        """The configs the search will time next, in place of those it named before: their
        kernels start building in the background (the space's precompile; nothing where it has
        none), and builds of configs no longer named that have not started are withdrawn, so
        that a search's leftovers do not hold up the next one's (or the process's exit)."""
        if self.space.precompile is None:
            return
        wanted = {dispatch.config_text(config): config for config in configs}
        for key, started in list(self._compiles.items()):
            if key not in wanted and started.cancel():
                del self._compiles[key]
        for key, config in wanted.items():
            if key not in self._compiles:
                try:
                    started = self.space.precompile(config, self.shape)
                except Exception:  # it fails again when timed, and is reported there
                    continue
                if started is not None:
                    self._compiles[key] = started

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
        """Seconds per call of one sample of `config` (on the GPU: scaled to the reference's
        speed, see Referenced)."""
        if self._referenced is not None:
            return self._referenced.sample(self._timed, config)
        return self._timed(config)

    def _timed(self, config, share: float = 1.0) -> float:
        """Seconds per call of one batch of `share` x the config's batch (a batch is sized at the
        config's first use to take about target_s)."""
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
        calls = max(1, round(batch * share))
        self._wait()
        t0 = time.perf_counter()
        for _ in range(calls):
            self._call(params)
        self._wait()
        return (time.perf_counter() - t0) / calls


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

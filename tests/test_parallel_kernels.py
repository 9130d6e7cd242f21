"""Every parallel CPU kernel (GEMM and ops) forks and joins numba's thread pool once per call:
its prange loop is its only parallel loop. Under numba's plain parallel=True, an np.zeros block
counter or an a.min() would each become a parallel loop too, and a small call would pay for two
or three forks and joins instead of one."""

from __future__ import annotations

import importlib
import pkgutil

import numba
import numpy as np
from numba import prange

import ops.cpu
from dispatch.cpu import prange_only
from gemm.cpu import driver


def _counter_min_and_prange(x, workers):
    counter = np.zeros(1, np.int64)
    partial = np.zeros(workers, x.dtype)
    for t in prange(workers):
        counter[0] += 0
        partial[t] = x[t]
    return partial.min() + counter[0]


def _parallel_loops(parallel, *calls) -> list[int]:
    kernel = numba.njit(parallel=parallel)(_counter_min_and_prange)
    for args in calls:
        kernel(*args)
    return [overload.metadata["parfor_diagnostics"].count_parfors()
            for overload in kernel.overloads.values()]


def test_prange_only_makes_the_prange_the_only_parallel_loop():
    calls = [(np.arange(4.0), 2), (np.arange(4, dtype=np.float32), 2)]
    # Two signatures: numba must not have used the options up on the first compile.
    assert _parallel_loops(prange_only(), *calls) == [1, 1]
    # What parallel=True does to the same code: np.zeros twice and .min() run in parallel too.
    assert all(count > 1 for count in _parallel_loops(True, *calls))


def _parallel_kernels():
    modules = [driver] + [importlib.import_module(f"ops.cpu.{info.name}")
                          for info in pkgutil.iter_modules(ops.cpu.__path__)]
    for module in modules:
        for name, value in vars(module).items():
            if (isinstance(value, numba.core.registry.CPUDispatcher)
                    and value.__module__ == module.__name__
                    and value.targetoptions.get("parallel")):
                yield f"{module.__name__}.{name}", value.targetoptions["parallel"]


def test_every_parallel_kernel_parallelizes_its_prange_alone():
    kernels = dict(_parallel_kernels())
    # GEMM's two and the ops' 25: a test that found none would pass on nothing.
    assert {"gemm.cpu.driver.run_parallel", "ops.cpu.probabilities.logsoftmax_rows_parallel",
            "ops.cpu.elementwise.unary_parallel"} <= kernels.keys()
    assert len(kernels) >= 20
    reference = prange_only()
    option_names = ("prange", "comprehension", "reduction", "inplace_binop", "setitem", "numpy",
                    "stencil", "fusion")
    wrong = [name for name, options in kernels.items()
             if any(getattr(options, o, None) != getattr(reference, o) for o in option_names)]
    assert not wrong, f"parallel kernels that parallelize more than their prange: {wrong}"

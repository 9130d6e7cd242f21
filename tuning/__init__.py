"""The autotuner: search each kernel's declared tuning space and write the per-machine store.

- `search` (tuning.search): the search over one space for one shape, with an injectable timer.
- `GemmBench` (tuning.bench): times and verifies real gemm_i8 calls for the search.
- `tuning.store`: writes the store that `dispatch` reads (format and lookup: dispatch.store).
- `i8gemm tune` (tuning.cli).
Importing this package registers `autotune` with dispatch: with I8GEMM_AUTOTUNE=1, a gemm_i8
shape the store lacks is tuned on first use (I8GEMM_AUTOTUNE_BUDGET seconds, default 5) and
recorded. dispatch imports this package by name when that setting asks for it.
"""

from __future__ import annotations

import math
from typing import Any

import dispatch

from .search import SearchResult, Trial, WrongAnswer, search

DEFAULT_AUTOTUNE_BUDGET_S = 5.0


def autotune(impl: dispatch.Implementation, shape: tuple, dtype: Any, limits) -> dict | None:
    """dispatch's autotuner hook: tune `shape`, record it in the store, return the config."""
    from . import store
    from .bench import GemmBench

    if impl.op != "gemm_i8" or impl.tuning_space is None:
        return None
    text = dispatch.cpu.setting("I8GEMM_AUTOTUNE_BUDGET")
    try:
        budget = float(text) if text else DEFAULT_AUTOTUNE_BUDGET_S
    except ValueError:
        raise ValueError(f"I8GEMM_AUTOTUNE_BUDGET={text!r} is not a number of seconds") from None
    if not budget > 0:
        raise ValueError(f"I8GEMM_AUTOTUNE_BUDGET={text!r}: expected a positive number of seconds")
    bench = GemmBench(impl, shape, limits)
    result = search(impl.tuning_space, shape, limits, bench.bench, verify=bench.verify,
                    prefetch=bench.prefetch, budget_s=budget, warmup=0)
    if not math.isfinite(result.best_time_s):
        return None  # nothing ran: keep the default (dispatch warns only on an exception)
    store.record([store.make_entry(impl.op, impl, dtype, limits, result)])
    return result.best


def tune_main(args) -> int:
    from . import cli

    return cli.main(args)


dispatch.register_autotuner(autotune)

__all__ = ["SearchResult", "Trial", "WrongAnswer", "autotune", "search", "tune_main"]

"""The kernel registry and the choice of implementation for each call.

Kernel modules register themselves here (dispatch imports none of them). `select()` answers: for
this op, shape and backend, which implementation runs and with which parameters: the tuning
store's entry for this machine if there is one (see dispatch.store for the lookup order), else
the implementation's heuristic default.

Autotuning on first use (I8GEMM_AUTOTUNE=1) needs the tuner, which lives in a layer above
(tuning/). It plugs in through `register_autotuner`, a hook: dispatch knows only the callable's
signature. So that setting the variable is enough, the first decision that needs the hook
imports the `tuning` package by name, the way a plugin is loaded; that import happens only when
the user opted in, and no dispatch module imports tuning at import time, so the layering stays
downward for everything else.

CPU paths are named after their ISA level ("avx2"), or "<level>-<variant>" ("avx2-i16") where a
level has several. Exactly one path per level is *preferred*: the one chosen when that level is
picked automatically (for AVX2, avx2-i16). The others run only when named (backend="cpu:avx2"
or I8GEMM_CPU_PATH=avx2).
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable
from typing import Any

from . import cpu, gpu, store
from .space import TuningSpace


@dataclasses.dataclass(frozen=True)
class Implementation:
    op: str                      # e.g. "gemm_i8"
    backend: str                 # "cpu" or "gpu"
    path: str                    # e.g. "avx512vnni"; the name users pass as backend="cpu:<path>"
    level: cpu.IsaLevel | None   # the ISA level it needs (CPU paths)
    entry: Any                   # the object the op's front end calls
    tuning_space: TuningSpace | None = None
    preferred: bool = True       # chosen for its level unless another path is named

    @property
    def qualified_name(self) -> str:
        return f"{self.backend}:{self.path}"

    def default_params(self, shape: tuple, threads: int | None = None) -> dict[str, Any]:
        """The heuristic choice for `shape` (realized for the entry point), ignoring the store."""
        space = self.tuning_space
        if space is None:
            return {}
        return space.realize(space.default(shape, space.limits(threads=threads)))

    def available(self) -> tuple[bool, str]:
        """(can run here, reason if not)."""
        if self.backend == "cpu" and self.level is not None:
            missing = cpu.missing_features(self.level)
            if missing:
                return False, "CPU lacks " + ", ".join(missing)
        if self.backend == "gpu":
            why = gpu.unavailable_reason()
            if why:
                return False, why
        return True, ""


_REGISTRY: dict[str, dict[str, Implementation]] = {}


def register(impl: Implementation) -> Implementation:
    if impl.backend == "cpu" and impl.preferred:
        for other in implementations(impl.op):
            if (other.backend == "cpu" and other.preferred and other.level == impl.level
                    and other.path != impl.path):
                raise ValueError(f"impl: cpu:{impl.path} and cpu:{other.path} are both the "
                                 f"preferred {impl.op!r} path of level {impl.level.path_name!r}")
    _REGISTRY.setdefault(impl.op, {})[impl.qualified_name] = impl
    _DECISIONS.clear()
    return impl


def implementations(op: str) -> list[Implementation]:
    return list(_REGISTRY.get(op, {}).values())


def _cpu_choice(op: str, level: cpu.IsaLevel) -> Implementation:
    for impl in implementations(op):
        if impl.backend == "cpu" and impl.level == level and impl.preferred:
            return impl
    raise RuntimeError(f"no CPU implementation of {op!r} is registered for path {level.path_name!r}")


def _cpu_named(op: str, name: str, label: str) -> Implementation:
    """The CPU path called `name` (any case, spaces ignored); `label` is how errors name it."""
    wanted = name.strip().lower()
    for impl in implementations(op):
        if impl.backend == "cpu" and impl.path == wanted:
            cpu.require(impl.level, label, impl.path)
            return impl
    names = ", ".join(i.path for i in sorted(
        (i for i in implementations(op) if i.backend == "cpu"), key=lambda i: (i.level, i.path)))
    raise ValueError(f"{label} is not a CPU path of {op!r}; expected one of: {names}")


def _gpu_choice(op: str) -> Implementation | None:
    for impl in implementations(op):
        if impl.backend == "gpu":
            return impl
    return None


_WARNED: set[str] = set()


def warn_cpu_fallback(reason: str) -> None:
    """One warning per reason: backend="auto" runs on the CPU."""
    if reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(f"i8gemm: running on the CPU: {reason}", RuntimeWarning, stacklevel=4)


def resolve(op: str, backend: str | None = None) -> Implementation:
    """The implementation for `backend`: None or "cpu" (the default CPU path), "cpu:<path>",
    "gpu" (RuntimeError naming the reason when there is no usable GPU), or "auto" (the GPU when
    there is one, else the default CPU path with one warning)."""
    if backend is None or backend == "cpu":
        forced = cpu.setting("I8GEMM_CPU_PATH")
        if forced:
            return _cpu_named(op, forced, f"I8GEMM_CPU_PATH={forced!r}")
        return _cpu_choice(op, max(cpu.available_levels()))
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string such as 'cpu', 'cpu:avx2', 'gpu' or "
                        f"'auto', got {backend!r}")
    kind, _, path = backend.partition(":")
    if kind == "cpu" and path:
        return _cpu_named(op, path, f"backend={backend!r}")
    if backend == "auto" or kind == "gpu":
        impl = _gpu_choice(op)
        if kind == "gpu" and path and (impl is None or path != impl.path):
            raise ValueError(f"backend={backend!r}: no GPU path {path!r} of {op!r}; expected 'gpu'"
                             + (f" or 'gpu:{impl.path}'" if impl is not None else ""))
        why = f"no GPU implementation of {op!r} is registered" if impl is None else impl.available()[1]
        if not why:
            return impl
        if kind == "gpu":
            raise RuntimeError(f"backend={backend!r}: {why}")
        warn_cpu_fallback(why)
        return resolve(op, None)
    raise ValueError(f"backend: expected 'cpu', 'cpu:<path>', 'gpu' or 'auto', got {backend!r}")


_DECISIONS: dict[tuple, tuple[Implementation, dict[str, Any]]] = {}
# Where each remembered decision's parameters came from: "tuned", "nearest", "autotuned" or
# "default" (for `explain` and the tests; not on the hot path).
_SOURCES: dict[tuple, str] = {}


def select(op: str, shape: tuple[int, ...], dtype: Any = None, backend: str | None = None,
           threads: int | None = None) -> tuple[Implementation, dict[str, Any]]:
    """Implementation and parameters for one call of `op` on `shape`.

    Decisions are remembered per (op, shape, dtype, backend, threads), so a repeated shape costs
    one dictionary lookup. Like intgemm's INTGEMM_CPUID, the I8GEMM_* environment variables and
    the tuning store are read once, at the first decision; `refresh()` reads them again."""
    key = (op, shape, dtype, backend, threads)
    decision = _DECISIONS.get(key)
    if decision is None:
        decision, source = _decide(op, shape, dtype, backend, threads)
        if not _AUTOTUNING:
            # Decisions taken while the autotuner runs (its own timing calls) are provisional.
            _DECISIONS[key] = decision
            _SOURCES[key] = source
    return decision


def explain(op: str, shape: tuple[int, ...], dtype: Any = None, backend: str | None = None,
            threads: int | None = None) -> str:
    """Where select()'s parameters for this call come from: "tuned", "nearest", "autotuned" or
    "default"."""
    select(op, shape, dtype, backend, threads)
    return _SOURCES.get((op, shape, dtype, backend, threads), "default")


def _decide(op, shape, dtype, backend, threads) -> tuple[tuple[Implementation, dict], str]:
    impl = resolve(op, backend)
    space = impl.tuning_space
    if space is None:
        return (impl, {}), "default"
    limits = space.limits(threads=threads)
    config, source = store.lookup(op, impl.qualified_name, space, dtype, limits, shape)
    if source != "tuned" and autotune_enabled() and not _AUTOTUNING:
        tuned = _autotune(impl, shape, dtype, limits)
        if tuned is not None:
            config, source = tuned, "autotuned"
    return (impl, space.realize(config)), source


# ---------------------------------------------------------------------------------------------
# The autotuner hook (see the module docstring).

AUTOTUNER_PACKAGE = "tuning"
_AUTOTUNER: Callable[..., dict | None] | None = None
_AUTOTUNING = False


def autotuning() -> bool:
    """Whether the autotuner is running: select()'s decisions meanwhile are provisional, and
    nothing built on them may be kept (gemm/cpu/plan.py)."""
    return _AUTOTUNING


def autotune_enabled() -> bool:
    return cpu.setting("I8GEMM_AUTOTUNE").lower() in ("1", "true", "yes", "on")


def register_autotuner(tune: Callable[..., dict | None]) -> None:
    """Install `tune(impl, shape, dtype, limits) -> config or None`: called by select() for a
    shape the store lacks when I8GEMM_AUTOTUNE=1; it tunes, records the result in the store
    and returns the chosen config (None: keep the default)."""
    global _AUTOTUNER
    _AUTOTUNER = tune


def _autotune(impl: Implementation, shape, dtype, limits) -> dict | None:
    global _AUTOTUNING
    if _AUTOTUNER is None:
        importlib.import_module(AUTOTUNER_PACKAGE)  # registers itself on import
    if _AUTOTUNER is None:
        raise RuntimeError(f"I8GEMM_AUTOTUNE=1: the package {AUTOTUNER_PACKAGE!r} registered no "
                           "autotuner")
    _AUTOTUNING = True
    try:
        return _AUTOTUNER(impl, shape, dtype, limits)
    except Exception as exc:  # a failed tuning must not fail the user's call
        warnings.warn(f"I8GEMM_AUTOTUNE: tuning {impl.qualified_name} for shape {shape} failed "
                      f"({exc}); using the default", RuntimeWarning, stacklevel=4)
        return None
    finally:
        _AUTOTUNING = False


_EPOCH = [0]  # bumped by refresh(): anything that remembers a decision compares it


def epoch() -> int:
    """Changes whenever remembered decisions are forgotten (refresh()), so a caller that keeps
    something built on a decision knows when to build it again."""
    return _EPOCH[0]


def refresh() -> None:
    """Forget remembered decisions, re-read the I8GEMM_* environment variables and the tuning
    store (after the environment, the registry or the store changes)."""
    _EPOCH[0] += 1
    _DECISIONS.clear()
    _SOURCES.clear()
    cpu.setting.cache_clear()
    store.refresh()
    gpu.refresh()

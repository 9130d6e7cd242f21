"""The kernel registry and the choice of implementation for each call.

Kernel modules register themselves here (dispatch imports none of them). `select()` answers: for
this op, shape and backend, which implementation runs and with which parameters. Parameters come
from the implementation's heuristic default; the tuning store (see the tuning issue) will be read
here first once it exists.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

from . import cpu, gpu


@dataclasses.dataclass(frozen=True)
class Implementation:
    op: str                      # e.g. "gemm_i8"
    backend: str                 # "cpu" or "gpu"
    path: str                    # e.g. "avx512vnni"; the name users pass as backend="cpu:<path>"
    level: cpu.IsaLevel | None   # the ISA level it needs (CPU paths)
    entry: Any                   # the object the op's front end calls
    tuning_space: dict[str, Any] = dataclasses.field(default_factory=dict)
    default_params: Callable[..., dict[str, Any]] | None = None

    @property
    def qualified_name(self) -> str:
        return f"{self.backend}:{self.path}"

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
    _REGISTRY.setdefault(impl.op, {})[impl.qualified_name] = impl
    _DECISIONS.clear()
    return impl


def implementations(op: str) -> list[Implementation]:
    return list(_REGISTRY.get(op, {}).values())


def _cpu_choice(op: str, level: cpu.IsaLevel) -> Implementation:
    for impl in implementations(op):
        if impl.backend == "cpu" and impl.level == level:
            return impl
    raise RuntimeError(f"no CPU implementation of {op!r} is registered for path {level.path_name!r}")


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
        return _cpu_choice(op, cpu.best_level())
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string such as 'cpu', 'cpu:avx2', 'gpu' or "
                        f"'auto', got {backend!r}")
    kind, _, path = backend.partition(":")
    if kind == "cpu" and path:
        level = cpu.parse_level(path, argument="backend")
        cpu.require(level, f"backend={backend!r}")
        return _cpu_choice(op, level)
    if backend in ("gpu", "auto"):
        impl = _gpu_choice(op)
        why = f"no GPU implementation of {op!r} is registered" if impl is None else impl.available()[1]
        if not why:
            return impl
        if backend == "gpu":
            raise RuntimeError(f"backend='gpu': {why}")
        warn_cpu_fallback(why)
        return _cpu_choice(op, cpu.best_level())
    raise ValueError(f"backend: expected 'cpu', 'cpu:<path>', 'gpu' or 'auto', got {backend!r}")


_DECISIONS: dict[tuple, tuple[Implementation, dict[str, Any]]] = {}


def select(op: str, shape: tuple[int, ...], dtype: Any = None, backend: str | None = None,
           threads: int | None = None) -> tuple[Implementation, dict[str, Any]]:
    """Implementation and parameters for one call of `op` on `shape`.

    Decisions are remembered per (op, shape, dtype, backend, threads), so a repeated shape costs
    one dictionary lookup. Like intgemm's INTGEMM_CPUID, the I8GEMM_* environment variables are
    read once, at the first decision; `refresh()` reads them again."""
    key = (op, shape, dtype, backend, threads)
    decision = _DECISIONS.get(key)
    if decision is None:
        impl = resolve(op, backend)
        params = impl.default_params(shape, threads=threads) if impl.default_params else {}
        decision = _DECISIONS[key] = (impl, params)
    return decision


def refresh() -> None:
    """Forget remembered decisions and re-read the I8GEMM_* environment variables (after the
    environment, the registry or the tuning store changes)."""
    _DECISIONS.clear()
    cpu.setting.cache_clear()
    gpu.refresh()

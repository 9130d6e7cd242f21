"""The kernel registry and the choice of implementation for each call.

Kernel modules register themselves here (dispatch imports none of them). `select()` answers: for
this op, shape and backend, which implementation runs and with which parameters. Parameters come
from the implementation's heuristic default; the tuning store (see the tuning issue) will be read
here first once it exists.

CPU paths are named after their ISA level ("avx2"), or "<level>-<variant>" ("avx2-i16") where a
level has several. Exactly one path per level is *preferred*: the one chosen when that level is
picked automatically (for AVX2, avx2-i16). The others run only when named (backend="cpu:avx2"
or I8GEMM_CPU_PATH=avx2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from . import cpu


@dataclasses.dataclass(frozen=True)
class Implementation:
    op: str                      # e.g. "gemm_i8"
    backend: str                 # "cpu" or "gpu"
    path: str                    # e.g. "avx512vnni"; the name users pass as backend="cpu:<path>"
    level: cpu.IsaLevel | None   # the ISA level it needs (CPU paths)
    entry: Any                   # the object the op's front end calls
    tuning_space: dict[str, Any] = dataclasses.field(default_factory=dict)
    default_params: Callable[..., dict[str, Any]] | None = None
    preferred: bool = True       # chosen for its level unless another path is named

    @property
    def qualified_name(self) -> str:
        return f"{self.backend}:{self.path}"

    def available(self) -> tuple[bool, str]:
        """(can run here, reason if not)."""
        if self.backend == "cpu" and self.level is not None:
            missing = cpu.missing_features(self.level)
            if missing:
                return False, "CPU lacks " + ", ".join(missing)
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


def resolve(op: str, backend: str | None = None) -> Implementation:
    """The implementation for `backend` ("cpu", "cpu:<path>", or None = the default CPU path)."""
    if backend is None or backend == "cpu":
        forced = cpu.setting("I8GEMM_CPU_PATH")
        if forced:
            return _cpu_named(op, forced, f"I8GEMM_CPU_PATH={forced!r}")
        return _cpu_choice(op, max(cpu.available_levels()))
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string such as 'cpu' or 'cpu:avx2', got {backend!r}")
    kind, _, path = backend.partition(":")
    if kind == "cpu" and path:
        return _cpu_named(op, path, f"backend={backend!r}")
    if kind == "gpu":
        raise RuntimeError(f"backend={backend!r}: the GPU path is not available yet (WGSL issue)")
    raise ValueError(f"backend: expected 'cpu', 'cpu:<path>' or 'gpu', got {backend!r}")


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

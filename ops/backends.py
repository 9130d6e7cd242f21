"""Which backend runs an op: chosen by the type of the input arrays.

numpy arrays run on the CPU backend (ops.cpu), dispatch.gpu_array.GpuArray on the GPU backend
(ops.wgsl, imported on first use); both offer the functions listed in ops/cpu/__init__.py. Any
other array type is a TypeError that names the argument. Types are matched exactly (a numpy
subclass such as a masked array is refused, since the kernels would ignore what the subclass adds).
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from dispatch.gpu_array import GpuArray

_BACKENDS: dict[type, str] = {np.ndarray: "ops.cpu", GpuArray: "ops.wgsl"}


def register_array_type(array_type: type, module: str) -> None:
    """Route arrays of `array_type` to the backend module named `module`."""
    _BACKENDS[array_type] = module


def backend_for(**arrays) -> ModuleType:
    """The backend module for these named arrays (None values are skipped); all must be of one
    kind, e.g. backend_for(x=x, weight=w)."""
    chosen = None
    first = None
    for name, value in arrays.items():
        if value is None:
            continue
        module = _BACKENDS.get(type(value))
        if module is None:
            raise TypeError(f"{name}: expected a numpy.ndarray or a GpuArray, got "
                            f"{type(value).__name__}" + _hint(value))
        if chosen is None:
            chosen, first = module, name
        elif module != chosen:
            raise TypeError(f"{name}: is a {type(value).__name__} but {first} is not; pass arrays "
                            "of one kind (all numpy or all GPU)")
    return _module(chosen or "ops.cpu")


_MODULES: dict[str, ModuleType] = {}


def _module(name: str) -> ModuleType:
    """The backend module `name`, imported on first use: every op call asks (importlib's own
    lookup took ~0.5 us of a small op's ~8)."""
    module = _MODULES.get(name)
    if module is None:
        module = _MODULES[name] = importlib.import_module(name)
    return module


def _hint(value) -> str:
    if isinstance(value, (list, tuple, int, float)):
        return " (convert it with np.asarray(..., dtype=np.float32))"
    return ""

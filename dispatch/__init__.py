"""What the machine is and which kernel runs: CPU features, the kernel registry, the tuning-store
reader, select().

Kernel modules register with `register()` and declare a `TuningSpace`; front ends call `select()`
or `resolve()`. This package imports no kernel module and not the tuner (the dependency arrows
point down only; see registry.py for the autotuner hook).
"""

from .cpu import IsaLevel, available_levels, best_level, cpu_model, cpu_name, host_features
from .fingerprint import cpu_fingerprint, gpu_fingerprint
from .registry import (
    Implementation,
    explain,
    implementations,
    refresh,
    register,
    register_autotuner,
    resolve,
    select,
)
from .space import TuningSpace, config_text

__all__ = [
    "Implementation", "IsaLevel", "TuningSpace", "available_levels", "best_level", "config_text",
    "cpu_fingerprint", "cpu_model", "cpu_name", "explain", "gpu_fingerprint", "host_features",
    "implementations", "refresh", "register", "register_autotuner", "resolve", "select",
]

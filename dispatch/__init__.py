"""What the machine is and which kernel runs: CPU features, the kernel registry, select().

Kernel modules register with `register()`; front ends call `select()` or `resolve()`. This
package imports no kernel module (the dependency arrows point down only).
"""

from .cpu import IsaLevel, available_levels, best_level, cpu_model, cpu_name, host_features
from .registry import Implementation, implementations, refresh, register, resolve, select

__all__ = [
    "Implementation", "IsaLevel", "available_levels", "best_level", "cpu_model", "cpu_name",
    "host_features", "implementations", "refresh", "register", "resolve", "select",
]

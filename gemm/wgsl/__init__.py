"""The WGSL GPU path of gemm_i8 (wgpu-py): shaders in *.wgsl, their tuning space in tiles.py,
WGSL text generation in kernels.py, B on the GPU in prepared.py, the call in driver.py.

Importing this package registers the "gpu:wgsl" implementation with dispatch; nothing touches
the GPU until a call asks for it.
"""

import dispatch

from . import driver, tiles
from .prepared import GpuPreparedB


def _fingerprint() -> str:
    from dispatch import gpu

    return dispatch.gpu_fingerprint(gpu.adapter().info)


dispatch.register(dispatch.Implementation(
    op="gemm_i8", backend="gpu", path="wgsl", level=None, entry=driver.gemm_i8,
    tuning_space=tiles.tuning_space(driver.limits, _fingerprint, driver.precompile)))

__all__ = ["GpuPreparedB", "driver", "tiles"]

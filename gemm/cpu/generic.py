"""Portable path: plain numba loops over the same packed layouts, auto-vectorised by LLVM.

Runs on any CPU numba supports; exact for every int8 value (int32 products, no saturation).
"""

from dispatch import IsaLevel

from .driver import CpuPath, register_path
from .simd import Tile

NAME = "generic"

PATH = register_path(CpuPath(
    name=NAME,
    level=IsaLevel.GENERIC,
    a_encoding="s8",
    b_allows_min=True,
    tiles=(Tile(NAME, 4, 2), Tile(NAME, 2, 4), Tile(NAME, 1, 4)),
))

"""Machine fingerprints: the identity of the device a tuned configuration was measured on.

A fingerprint names the device itself, never an index into a list of devices (cubecl's mistake):
  CPU:  "cpu|<model name>|<LLVM micro-architecture>|<hash of the usable features>", so the same
        model with AVX-512 disabled by the OS, or a VM hiding features, is another machine.
  GPU:  "gpu|<adapter name>|<driver>|<backend>", from wgpu's adapter info (e.g.
        "gpu|NVIDIA H100 80GB HBM3|NVIDIA 550.54|Vulkan"), so a driver update re-tunes.
The fingerprint is one field of the tuning store's key; the kernel version is another.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

from . import cpu


def _clean(text: Any) -> str:
    return " ".join(str(text).replace("|", "/").split()) or "unknown"


@functools.lru_cache(maxsize=1)
def cpu_fingerprint() -> str:
    usable = sorted(name for name, on in cpu.host_features().items() if on)
    features = hashlib.sha256(",".join(usable).encode()).hexdigest()[:12]
    return f"cpu|{_clean(cpu.cpu_model())}|{_clean(cpu.cpu_name())}|{features}"


def gpu_fingerprint(adapter_info: Mapping[str, Any]) -> str:
    """From wgpu's `adapter.info` (keys device, description, driver, backend_type, ...). wgpu
    reports the driver in `description` on Vulkan (e.g. "Mesa 22.3.6 (LLVM 15.0.6)") and in
    `driver`/`driver_info` elsewhere; whichever is present is used."""
    name = adapter_info.get("device") or adapter_info.get("vendor") or "unknown"
    driver = " ".join(str(adapter_info[k]) for k in ("driver", "driver_info", "description")
                      if adapter_info.get(k))
    backend = adapter_info.get("backend_type") or adapter_info.get("backend") or "unknown"
    return f"gpu|{_clean(name)}|{_clean(driver)}|{_clean(backend)}"

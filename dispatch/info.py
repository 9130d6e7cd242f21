"""`i8gemm info`: what this machine is and which path each call would take."""

from __future__ import annotations

from . import cpu, registry


def report() -> str:
    feats = cpu.host_features()
    lines = [f"CPU:       {cpu.cpu_model()} (LLVM: {cpu.cpu_name()})"]
    lines.append("features:  " + " ".join(
        f"{name}{'+' if feats.get(name) else '-'}" for name in cpu.REPORTED_FEATURES))
    lines.append("           (+ usable: CPUID and the OS's XGETBV state both; - absent)")
    lines.append("")
    lines.append("gemm_i8 paths:")
    try:
        chosen = registry.resolve("gemm_i8").qualified_name
        chosen_note = ""
    except (ValueError, RuntimeError) as exc:
        chosen, chosen_note = None, str(exc)
    for impl in sorted(registry.implementations("gemm_i8"), key=lambda i: (i.level or 0, i.path)):
        ok, why = impl.available()
        mark = "  <- chosen" if impl.qualified_name == chosen else ""
        status = "available" if ok else f"unavailable ({why})"
        if not impl.preferred:
            status += "; runs only when named"
        lines.append(f"  {impl.qualified_name:<16} {status}{mark}")
    forced = cpu.setting("I8GEMM_CPU_PATH")
    if forced:
        lines.append(f"  I8GEMM_CPU_PATH={forced} forces the path")
    if chosen_note:
        lines.append(f"  error: {chosen_note}")
    lines.append("")
    lines.append("threads:   " + _threads())
    lines.extend(_gpu_lines())
    lines.append("tuning:    " + _tuning())
    return "\n".join(lines)


def _tuning() -> str:
    """The store's location and how many of its entries apply here (this CPU's fingerprint and
    this library's kernel versions)."""
    from . import fingerprint, store

    versions = {i.tuning_space.version for i in registry.implementations("gemm_i8")
                if i.backend == "cpu" and i.tuning_space is not None}
    entries = store.read()
    here = store.entries_for_this_machine(entries, {fingerprint.cpu_fingerprint()}, versions)
    autotune = " (I8GEMM_AUTOTUNE=1: new shapes are tuned on first use)" \
        if registry.autotune_enabled() else ""
    return (f"store {store.describe()}\n           {here} entries for this machine"
            f" ({len(entries)} in all){autotune}; `i8gemm tune` fills it")


def _gpu_lines() -> list[str]:
    from . import gpu

    found = gpu.adapters()
    why = gpu.unavailable_reason()
    chosen = None if why else gpu.adapter()
    lines = ["GPU adapters (wgpu; I8GEMM_GPU=<name> picks one, I8GEMM_GPU=off disables):"]
    if not found:
        lines.append("  none found (gemm_i8(..., backend='gpu') raises; 'auto' runs on the CPU)")
    for a in found:
        d = gpu.describe(a)
        lim = d["limits"]
        dot4 = ("native (SPIR-V OpSDot / HLSL dot4add)" if d["dot4_native"]
                else "polyfilled (no packed dot product in MSL/GLSL)")
        mark = "  <- chosen" if a is chosen else ""
        lines.append(f"  {d['name']} [{d['backend']}, {d['type']}, driver {d['driver']}]{mark}")
        lines.append(f"    dot4I8Packed {dot4}; timestamps {'yes' if d['timestamps'] else 'no'}")
        lines.append(f"    limits: workgroup storage {lim['max-compute-workgroup-storage-size']} B, "
                     f"invocations {lim['max-compute-invocations-per-workgroup']}, storage buffer "
                     f"{lim['max-storage-buffer-binding-size']} B, buffer {lim['max-buffer-size']} B")
    if found and why:
        lines.append(f"  GPU unavailable: {why}")
    return lines


def _threads() -> str:
    import numba

    from .cpu import setting

    env = setting("I8GEMM_NUM_THREADS")
    note = f" (I8GEMM_NUM_THREADS={env})" if env else " (all cores; I8GEMM_NUM_THREADS to change)"
    return f"{numba.config.NUMBA_NUM_THREADS} available{note}, numba layer " \
           f"{numba.config.THREADING_LAYER}"


def main(args) -> int:
    import gemm  # noqa: F401  (the kernels register themselves on import)

    print(report())
    return 0

"""The autotuner and the per-machine tuning store (not yet implemented).

To come (see the tuning issue): search over each kernel's declared tuning space (the CPU paths
already declare theirs: `gemm.cpu.driver.TUNING_SPACE`), a store keyed by machine fingerprint that
`dispatch.select` reads, and the `i8gemm tune` command.
"""


def tune_main(args) -> int:
    print("i8gemm tune: not yet implemented (the autotuner lands with its own issue).")
    return 2

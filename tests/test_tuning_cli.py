"""The CPU tuning space, `i8gemm tune`, ONNX model shapes, and I8GEMM_AUTOTUNE=1 end to end.

These run real (tiny) kernels but assert nothing about speed: only that every configuration is
exact, that the command records what it tuned, and that autotuning on first use stores a shape.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import child_env
from hypothesis import given, settings
from hypothesis import strategies as st

import dispatch
import gemm  # noqa: F401
from dispatch import store as reader
from graph import cli
from tuning.bench import GemmBench
from tuning.model_shapes import model_shapes
from tuning.search import WrongAnswer

STANDARD = [(1, 512, 512), (8, 512, 2048), (32, 512, 512), (64, 512, 2048), (128, 1024, 1024),
            (256, 1024, 4096), (256, 2048, 2048), (16, 512, 32000), (64, 512, 32000),
            (1024, 1024, 1024)]


@pytest.fixture
def store_file(tmp_path, i8gemm_env):
    path = tmp_path / "tuning.json"
    i8gemm_env("I8GEMM_TUNING_STORE", str(path))
    i8gemm_env("I8GEMM_AUTOTUNE", None)
    return path


# ---------------------------------------------------------------------------------------------
# The CPU space.


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2048), st.integers(1, 4096), st.integers(1, 40000), st.integers(1, 16))
def test_cpu_space_defaults_are_allowed_and_candidates_obey_the_restrictions(m, k, n, threads):
    for impl in dispatch.implementations("gemm_i8"):
        if impl.backend != "cpu":
            continue
        space = impl.tuning_space
        limits = {"threads": threads}
        default = space.default((m, k, n), limits)
        assert space.allows(default, (m, k, n), limits), (impl.path, default)
        for config in space.configs((m, k, n), limits):
            mr = space.realize(config)["tile"].mr
            assert config["m_block"] == "all" or config["m_block"] % mr == 0
            assert 1 <= config["threads"] <= threads
            if config["threads"] == 1:   # the serial driver walks every panel per row block
                assert config["p_block"] == "all"


# The limits of a small adapter (lavapipe's) and of a large one: the space must respect both.
GPU_LIMITS = ({"max-compute-invocations-per-workgroup": 256, "max-compute-workgroup-size-x": 256,
               "max-compute-workgroup-size-y": 256, "max-compute-workgroup-storage-size": 16384},
              {"max-compute-invocations-per-workgroup": 1024, "max-compute-workgroup-size-x": 1024,
               "max-compute-workgroup-size-y": 1024, "max-compute-workgroup-storage-size": 49152})


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4096), st.integers(1, 4096), st.integers(1, 40000), st.sampled_from(GPU_LIMITS))
def test_gpu_space_defaults_are_allowed_and_candidates_obey_the_adapter_limits(m, k, n, limits):
    from gemm.wgsl import tiles

    impl = dispatch.resolve("gemm_i8", "cpu")  # any; the GPU space needs no device for this
    space = next(i for i in dispatch.implementations("gemm_i8") if i.backend == "gpu").tuning_space
    assert impl.backend == "cpu"
    default = space.default((m, k, n), limits)
    assert space.allows(default, (m, k, n), limits), default
    configs = list(space.configs((m, k, n), limits))
    assert configs
    for config in configs:
        cfg = space.realize(config)["config"]
        assert tiles.config_name(cfg) == config["config"]
        if cfg.kernel == "small_m":
            assert m <= tiles.SMALL_M_MAX
            assert cfg.why_invalid(limits, tiles.small_m_rows(m)) is None
        else:
            assert cfg.why_invalid(limits) is None
            assert cfg.invocations <= limits["max-compute-invocations-per-workgroup"]
            assert cfg.workgroup_bytes <= limits["max-compute-workgroup-storage-size"]


def test_cpu_space_covers_the_standard_shapes():
    impl = dispatch.resolve("gemm_i8")
    limits = {"threads": 2}
    for shape in STANDARD:
        configs = list(impl.tuning_space.configs(shape, limits))
        tiles = {c["tile"] for c in configs}
        assert tiles == set(impl.tuning_space.params["tile"])
        assert {c["threads"] for c in configs} == {1, 2}


def test_every_configuration_of_the_space_is_exact():
    """The tuner's own verification (GemmBench.verify) passes for every config of the chosen
    path on an awkward shape, and fails for a config that computes something else."""
    impl = dispatch.resolve("gemm_i8")
    shape = (29, 45, 211)
    limits = impl.tuning_space.limits(threads=2)
    bench = GemmBench(impl, shape, limits, seed=3)
    configs = list(impl.tuning_space.configs(shape, limits))
    assert len(configs) > 20
    for config in configs:
        bench.verify(config)
    bench.reference[3, 5] += 1        # a reference the kernel cannot match
    with pytest.raises(WrongAnswer, match="1 of"):
        bench.verify(configs[0])


# ---------------------------------------------------------------------------------------------
# ONNX model shapes.


def _model(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((48, 32)).astype(np.float32), "W2")
    w3 = numpy_helper.from_array(rng.integers(-127, 128, (48, 16)).astype(np.int8), "W3")
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"]),                       # [b, s, 64] @ 64x32
        helper.make_node("Reshape", ["h1", "shape2d"], ["h1_2d"]),
        helper.make_node("Gemm", ["h1_2d", "W2"], ["h2"], transB=1),           # [?, 32] @ (48x32)^T
        helper.make_node("MatMulInteger", ["q", "W3"], ["h3"]),                # [4, 48] @ 48x16
        helper.make_node("MatMul", ["x", "y"], ["not_a_weight"]),              # B is no initializer
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 64]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 8]),
         helper.make_tensor_value_info("q", TensorProto.INT8, [4, 48])],
        [helper.make_tensor_value_info("h2", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("h3", TensorProto.INT32, None),
         helper.make_tensor_value_info("not_a_weight", TensorProto.FLOAT, None)],
        initializer=[w1, w2, w3, numpy_helper.from_array(np.array([-1, 32], np.int64),
                                                         "shape2d")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path.write_bytes(model.SerializeToString())
    return path


def test_model_shapes(tmp_path):
    shapes = model_shapes(_model(tmp_path / "m.onnx"), [1, 8])
    # MatMul: M = batch (batch and seq are symbolic together); Gemm transB: K=32, N=48, its A's
    # leading dim is inferred as unknown -> batch; MatMulInteger: fixed M = 4.
    assert shapes == [(1, 64, 32), (8, 64, 32), (1, 32, 48), (8, 32, 48), (4, 48, 16)]


def test_model_shapes_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="--model"):
        model_shapes(bad, [1])


# ---------------------------------------------------------------------------------------------
# `i8gemm tune`.


def test_tune_command_records_and_shows_and_clears(store_file, capsys):
    rc = cli.main(["tune", "--shapes", "4,32,48;3,40,20", "--budget", "0.3", "--repeats", "2",
                   "--threads", "2"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "geometric mean gain" in out.out
    assert "   4    32     48 |" in out.out and "   3    40     20 |" in out.out
    assert "shape 2/2" in out.err                      # the progress bar
    entries = reader.read(store_file)
    assert {(e["shape"][0], e["k"], e["n"]) for e in entries.values()} == {(4, 32, 48), (3, 40, 20)}
    for e in entries.values():
        assert e["fingerprint"] == dispatch.cpu_fingerprint()
        assert e["time_s"] > 0 and e["default_time_s"] > 0
        assert e["limits"] == reader.limits_text(
            dispatch.resolve("gemm_i8").tuning_space.limits(threads=2))
    assert dispatch.explain("gemm_i8", (4, 32, 48), np.dtype(np.int8), threads=2) == "tuned"

    assert cli.main(["tune", "--show"]) == 0
    shown = capsys.readouterr().out
    assert "2 entries, 2 for this machine" in shown and str(store_file) in shown

    assert cli.main(["info"]) == 0
    assert "2 entries for this machine" in capsys.readouterr().out

    assert cli.main(["tune", "--clear"]) == 0
    assert "2 entries removed" in capsys.readouterr().out
    assert reader.read(store_file) == {}


def test_a_choice_that_loses_the_side_by_side_re_timing_is_not_recorded(store_file, capsys,
                                                                        monkeypatch):
    import tuning.cli as tune_cli

    real_search = tune_cli.search

    def search_choosing_another(space, shape, limits, *args, **kwargs):
        result = real_search(space, shape, limits, *args, **kwargs)
        other = next(c for c in space.configs(shape, limits) if c != result.default)
        return dataclasses.replace(result, best=other, best_time_s=result.default_time_s / 2)

    monkeypatch.setattr(tune_cli, "search", search_choosing_another)
    monkeypatch.setattr(tune_cli, "compare", lambda bench, named, repeats: {
        name: 2e-5 if name == "tuned" else 1e-5 for name in named})
    assert cli.main(["tune", "--shapes", "4,32,48", "--budget", "0.2", "--repeats", "2",
                     "--threads", "2"]) == 0
    out = capsys.readouterr()
    (entry,) = reader.read(store_file).values()
    assert entry["config"] == entry["default_config"]
    assert entry["time_s"] == entry["default_time_s"] == 1e-5
    assert "100% slower than the default side by side; the default is kept" in out.err
    assert "1.00 |" in out.out and "(the default)" in out.out


def test_tune_command_with_a_model(store_file, tmp_path, capsys):
    model = _model(tmp_path / "m.onnx")
    rc = cli.main(["tune", "--model", str(model), "--batch", "2", "--budget", "0.2",
                   "--repeats", "1", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    shapes = {tuple(e["shape"]) for e in reader.read(store_file).values()}
    assert shapes == {(2, 64, 32), (2, 32, 48), (4, 48, 16)}


@pytest.mark.parametrize("argv,message", [
    (["--backend", "gpu:nope"], "no GPU path 'nope'"),
    (["--budget", "0"], "--budget"),
    (["--shapes", "1,2"], "--shapes"),
    (["--batch", "x", "--model", "m.onnx"], "--batch"),
    (["--backend", "tpu"], "backend"),
])
def test_tune_command_errors(store_file, capsys, argv, message):
    assert cli.main(["tune", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not store_file.exists()


def test_tune_on_the_gpu_without_one_names_the_reason(store_file, i8gemm_env, capsys):
    i8gemm_env("I8GEMM_GPU", "off")
    assert cli.main(["tune", "--backend", "gpu"]) == 2
    assert "I8GEMM_GPU" in capsys.readouterr().err
    assert not store_file.exists()


# ---------------------------------------------------------------------------------------------
# I8GEMM_AUTOTUNE=1, end to end in fresh processes.

_SCRIPT = """
import sys, numpy as np, gemm, dispatch
rng = np.random.default_rng(1)
a = rng.integers(-128, 128, (24, 72), dtype=np.int8)
b = rng.integers(-127, 128, (72, 40), dtype=np.int8)
c = gemm.gemm_i8(a, b, threads=2)
assert np.array_equal(c, a.astype(np.int32) @ b.astype(np.int32))
print(dispatch.explain("gemm_i8", (24, 72, 40), np.dtype(np.int8), threads=2))
print("tuning" in sys.modules)
"""


def _run(env_extra: dict) -> list[str]:
    env = child_env({k: v for k, v in os.environ.items() if not k.startswith("I8GEMM_")},
                    **env_extra)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_autotune_on_first_use_end_to_end(tmp_path):
    path = tmp_path / "tuning.json"
    first = _run({"I8GEMM_TUNING_STORE": str(path), "I8GEMM_AUTOTUNE": "1",
                  "I8GEMM_AUTOTUNE_BUDGET": "0.5"})
    assert first == ["autotuned", "True"]
    entries = list(json.loads(path.read_text())["entries"])
    assert len(entries) == 1
    e = entries[0]
    assert (e["shape"], e["k"], e["n"], e["m_bucket"]) == ([24, 72, 40], 72, 40, 32)
    assert e["fingerprint"] == dispatch.cpu_fingerprint()
    # A later process without autotuning uses the stored entry, and never imports the tuner.
    assert _run({"I8GEMM_TUNING_STORE": str(path)}) == ["tuned", "False"]


@pytest.mark.gpu
def test_gpu_candidates_are_verified_and_timed_on_resident_data():
    """On the GPU the tuner times what a caller chaining GPU calls runs: A, B and C stay in GPU
    memory (no transfer per call), and each config is still checked against the exact product."""
    from dispatch import gpu

    why = gpu.unavailable_reason()
    if why:
        pytest.skip(f"no GPU adapter: {why}")
    impl = next(i for i in dispatch.implementations("gemm_i8") if i.backend == "gpu")
    shape = (5, 37, 70)
    limits = impl.tuning_space.limits()
    bench = GemmBench(impl, shape, limits, seed=4)
    configs = list(impl.tuning_space.configs(shape, limits))[:6]
    moved = dict(gpu.TRANSFERS)
    for config in configs:
        bench.bench(config)
    assert {k: gpu.TRANSFERS.get(k, 0) - moved.get(k, 0) for k in ("upload", "download")} == \
        {"upload": 0, "download": 0}
    for config in configs:
        bench.verify(config)
    bench.reference[1, 2] += 1
    with pytest.raises(WrongAnswer, match="1 of"):
        bench.verify(configs[0])


@pytest.mark.gpu
def test_gpu_candidates_announced_by_the_search_are_compiled_ahead(monkeypatch):
    """GemmBench.prefetch compiles a GPU candidate's kernel in the background, the very
    pipeline its call then uses (none is compiled again), and a kernel that fails to compile in
    the background fails its candidate's call as a compile would."""
    from dispatch import gpu

    why = gpu.unavailable_reason()
    if why:
        pytest.skip(f"no GPU adapter: {why}")
    impl = next(i for i in dispatch.implementations("gemm_i8") if i.backend == "gpu")
    space = impl.tuning_space
    compiled = []
    compile_ = gpu._compile
    monkeypatch.setattr(gpu, "_compile", lambda dev, *key: compiled.append(key) or
                        compile_(dev, *key))
    for shape in [(3, 40, 70), (40, 72, 90)]:   # a small-M and a tiled shape
        limits = space.limits()
        bench = GemmBench(impl, shape, limits, seed=5)
        bench.verify(space.default(shape, limits))   # the shared kernels (packing, ...)
        fresh = [c for c in space.configs(shape, limits)
                 if not _compiled_already(space, c, shape)][:3]
        assert fresh, "every candidate was compiled already: pick another shape"
        bench.prefetch(fresh)
        for future in list(gpu._COMPILING.values()):
            future.result()
        ahead = len(compiled)
        for config in fresh:
            bench.verify(config)
        # (A split K's shared reduction kernel may compile now, on its first use.)
        again = [key for key in compiled[ahead:] if key in {_multiply_key(c, shape) for c in fresh}]
        assert not again, "a prefetched kernel was compiled again"
        assert all(_multiply_key(c, shape) in gpu._PIPELINES for c in fresh)
    # Builds no longer wanted, and not started yet, are withdrawn; such a config still runs
    # (its kernel compiles when called).
    shape = (40, 72, 90)
    bench = GemmBench(impl, shape, space.limits(), seed=6)
    queued = [c for c in space.configs(shape, space.limits())
              if not _compiled_already(space, c, shape)][:gpu.COMPILE_THREADS + 6]
    bench.prefetch(queued)
    bench.prefetch([])
    withdrawn = [c for c in queued if _multiply_key(c, shape) in gpu._COMPILING
                 and gpu._COMPILING[_multiply_key(c, shape)].cancelled()]
    assert withdrawn, "every build had started: nothing was withdrawn"
    assert not bench._compiles or all(not f.cancelled() for f in bench._compiles.values())
    bench.verify(withdrawn[0])
    broken = "@compute @workgroup_size(1) fn main() { let x: i32 = 1.5; }"
    gpu.precompile(broken, "u")
    with pytest.raises(Exception, match="(?i)type|mismatch|convert|validation"):
        gpu.pipeline(broken, "u")


def _multiply_key(config, shape) -> tuple:
    """The pipeline key of a GPU configuration's GEMM kernel for int32 output."""
    from gemm.wgsl import driver, tiles

    source = driver._multiply_source(tiles.parse_config(config["config"]), shape[0], "i32")
    return (source, driver.GEMM_BINDINGS, "main")


def _compiled_already(space, config, shape) -> bool:
    from dispatch import gpu

    return _multiply_key(config, shape) in gpu._PIPELINES


def test_a_kernel_that_cannot_be_built_ahead_fails_when_timed_not_before(store_file):
    """A candidate whose background build cannot even start does not stop the search: it is
    reported as failed when its turn comes, as any failing candidate is."""
    impl = dispatch.resolve("gemm_i8", "cpu")
    shape = (4, 32, 48)
    limits = impl.tuning_space.limits(threads=1)
    bench = GemmBench(impl, shape, limits)

    def cannot_build(config, shape):
        raise RuntimeError("no kernel for this one")

    bench.space = dataclasses.replace(bench.space, precompile=cannot_build)
    configs = list(bench.space.configs(shape, limits))[:3]
    bench.prefetch(configs)   # no exception
    bench.verify(configs[0])  # the call itself still decides

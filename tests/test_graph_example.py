"""The worked example (graph/example_translate.py) and `i8gemm run` on a small model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import graph
from graph import cli, example_translate, transformer

pytest.importorskip("onnxruntime")


def test_greedy_decoding_with_and_without_a_shortlist():
    result = example_translate.demo(vocab=3000, width=64, batch=2, src_len=5, steps=4,
                                    shortlist_size=300, verbose=False)
    assert result["full"].shape == (2, 5)
    # The shortlist holds every word the full decode chose, and the shortlisted projection
    # is the full one restricted to those columns, exactly.
    assert result["logits_max_diff"] == 0.0
    assert np.isin(result["shortlist"], result["shortlist_ids"]).all()
    assert result["agreement"] >= 0.75


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    return transformer.quantize_dynamic(transformer.encoder(width=64, heads=2), False, str(folder),
                                        "enc")


def test_run_command_times_and_compares(small_model, tmp_path, capsys):
    out = tmp_path / "out.npz"
    assert cli.main(["run", small_model, "--dims", "batch=2,seq=5", "--repeats", "1",
                     "--compare-ort", "--save", str(out)]) == 0
    text = capsys.readouterr().out
    assert "DynamicQuantMatMul" in text and "i8gemm / onnxruntime" in text
    saved = np.load(out)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 5, 64)).astype(np.float32)}
    np.testing.assert_array_equal(saved["y"], graph.Session(small_model).run(None, feeds)[0])


def test_run_command_reads_npz_inputs(small_model, tmp_path, capsys):
    x = np.ones((3, 4, 64), np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    assert cli.main(["run", small_model, "--inputs", str(tmp_path / "in.npz"), "--repeats", "1"]) == 0
    assert "input  x: float32 (3, 4, 64)" in capsys.readouterr().out


def test_explain_lists_fused_groups_and_gpu_transfers(small_model, capsys):
    assert cli.main(["run", small_model, "--explain"]) == 0
    cpu = capsys.readouterr().out
    assert "fused: " in cpu and "gemm.gemm_i8 cpu:" in cpu
    nodes = onnx.load(small_model).graph.node
    n_gemms = sum(n.op_type == "MatMulInteger" for n in nodes)
    n_norms = sum(n.op_type == "LayerNormalization" for n in nodes)
    divs = {n.output[0] for n in nodes if n.op_type == "Div"}
    n_scaled = sum(n.op_type == "Softmax" and n.input[0] in divs for n in nodes)
    # the GEMMs (query, key and value projections merged into one), the Gelu, each residual Add
    # with its LayerNormalization, each scaled Softmax
    assert f"fused groups: {n_gemms - 2 + 1 + n_norms + n_scaled}" in cpu
    assert "3 GEMMs on one A merged" in cpu
    assert cli.main(["run", small_model, "--explain", "--backend", "gpu"]) == 0
    gpu = capsys.readouterr().out
    # Every op of this encoder has a GPU kernel: the input goes up once, the output comes down.
    assert "for want of a GPU kernel (each forces transfers): none" in gpu
    assert "transfers per run (1 + 1 output downloads)" in gpu and "upload x (model input)" in gpu


def test_run_command_reports_a_bad_model(tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    assert cli.main(["run", str(tmp_path / "bad.onnx")]) == 2
    assert "error" in capsys.readouterr().err

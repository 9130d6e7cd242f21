"""`i8gemm bench --paths`: CPU paths compared side by side (a tiny run; no speed is asserted)."""

from __future__ import annotations

import json

import pytest
from conftest import available_paths

from gemm import bench_paths
from graph import cli


def test_bench_paths_table_and_json(tmp_path, capsys):
    paths = [p for p in ("generic", "avx2", "avx2-i16") if p in available_paths()]
    out = tmp_path / "paths.json"
    rc = cli.main(["bench", "--paths", ",".join(paths), "--threads", "1", "--repeats", "1",
                   "--shapes", "3,40,50;1,7,9", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert f"{paths[1]}/{paths[0]}" in text and "geometric mean" in text
    result = json.loads(out.read_text())
    assert result["paths"] == paths
    assert [r["shape"] for r in result["rows"]] == [[3, 40, 50], [1, 7, 9]]
    for row in result["rows"]:
        assert set(paths) <= set(row["gops"]) and all(v > 0 for v in row["gops"].values())
        assert set(row["vs_first"]) == set(paths[1:])


@pytest.mark.parametrize("text", ["avx2", "", "avx2,"])
def test_bench_paths_needs_two_paths(text):
    with pytest.raises(ValueError, match="--paths"):
        bench_paths.parse_paths(text)


def test_bench_paths_unknown_path(capsys):
    rc = cli.main(["bench", "--paths", "generic,nonsense", "--threads", "1", "--repeats", "1",
                   "--shapes", "2,3,4"])
    assert rc == 2
    assert "nonsense" in capsys.readouterr().err

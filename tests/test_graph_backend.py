"""onnx's backend node tests against graph.backend.GraphBackend.

The allow-list is the op table itself: every node test whose graph uses only op types in
graph.registry.OPS runs here, except those EXCLUDED below, each with its reason. A test of an op
in the table that fails is a failure, not an exclusion.
"""

from __future__ import annotations

import warnings

import onnx.backend.test
import pytest
from onnx.backend.test.loader import load_model_tests

from graph import registry
from graph.backend import GraphBackend

EXCLUDED = {
    r"(?i)(bfloat16|float8|e4m3|e5m2|e8m0|float4e2m1|u?int4|u?int2)":
        "element types numpy has no dtype for (bfloat16, float8, 4- and 2-bit integers) are "
        "not supported",
    r"_string": "string tensors are not supported",
    r"test_identity_(sequence|opt)": "sequence and optional values are not supported",
    r"_blocked": "blocked quantization (block_size > 0) is not supported",
}


def _node_tests_in_table() -> list[str]:
    supported = set(registry.supported_op_types())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnx's test generators warn about their own data
        cases = load_model_tests(kind="node")
    return sorted(c.name for c in cases
                  if {n.op_type for n in c.model.graph.node} <= supported
                  and all(n.domain in ("", "ai.onnx") for n in c.model.graph.node))


NODE_TESTS = _node_tests_in_table()

backend_test = onnx.backend.test.BackendTest(GraphBackend, __name__)
for _name in NODE_TESTS:
    backend_test.include(f"^{_name}_cpu$")
for _pattern in EXCLUDED:
    backend_test.exclude(_pattern)
_included = {f"{n}_cpu" for n in NODE_TESTS}
_cases = backend_test.test_cases   # a property that builds new classes on every access
for _cls in _cases.values():
    # Drop the thousands of tests of ops outside the table rather than list them as skipped;
    # the EXCLUDED ones stay, and show as skipped with their pattern.
    for _attr in [a for a in vars(_cls) if a.startswith("test_") and a not in _included]:
        delattr(_cls, _attr)
globals().update(_cases)


def test_every_op_in_the_table_has_backend_tests_run():
    """Each op type in the table is exercised by at least one node test that is not excluded
    (where onnx has one), so an op cannot drift out of coverage silently."""
    import re
    ran = [n for n in NODE_TESTS if not any(re.search(p, n) for p in EXCLUDED)]
    without = [op for op in registry.supported_op_types()
               if not any(n.startswith("test_" + _ONNX_TEST_NAME.get(op, _snake(op))) or
                          n.startswith("test_" + op.lower()) for n in ran)]
    # Ops onnx has no node test of its own for (they appear inside other tests' graphs).
    assert set(without) <= {"Constant", "MatMulInteger"} | set(_NO_ONNX_TEST), without


def _snake(name: str) -> str:
    import re
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_NO_ONNX_TEST: list[str] = []
_ONNX_TEST_NAME = {"GreaterOrEqual": "greater_equal"}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

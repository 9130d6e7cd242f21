"""graph.Session: load an ONNX model once, run it many times, onnxruntime-style.

    sess = graph.Session("model.onnx")            # or bytes, or an onnx.ModelProto
    (logits,) = sess.run(None, {"input": x})      # run(output_names or None, feeds)
    sess.get_inputs()[0].name, .shape, .type      # like onnxruntime's NodeArg
    pb = sess.prepared_weight("out_proj")         # a gemm.PreparedB, by initializer or node name
    h = sess.run_until("encoder_out", feeds)      # any intermediate tensor

With backend="gpu" the plan is then placed (graph/gpu_plan.py): each step runs on the GPU in
its graph/gpu_ops.py form or on the host, with explicit Upload/Download steps where a tensor
must cross; weights, scales and biases go to GPU memory once, here. The model's inputs are
uploaded once and its outputs downloaded once per run.

Everything is decided at construction, in this order, and a model that fails any step raises
before a Session exists: onnx.checker; every op and opset looked up in the op table (all the
missing ones reported together, with their nodes); attributes converted and validated (errors
name the node); initializers read with their sizes checked against the bytes present; shape
inference; one topological order; fusion of the quantized GEMM chains (graph/fusion.py) with their
weights prepared once; and, for every step, the tensors it is the last reader of. `run()` is then
one loop over the steps (STYLE: the runner is a loop): look up inputs, call, store outputs,
drop tensors no later step reads.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, shape_inference

import gemm

from . import fusion, gpu_plan, memory, onnx_ops, registry
from .float_attention import FloatAttention
from .float_matmul import FloatMatMul, blas_single_threaded
from .float_softmax import FloatSoftmax
from .onnx_ops import requantize
from .tensors import ONNX_TO_NUMPY, numpy_dtype, to_array, type_name


class NodeError(RuntimeError):
    """A node failed while running; the message names it."""


@dataclasses.dataclass(frozen=True)
class NodeArg:
    """A graph input or output, described as onnxruntime's NodeArg describes it."""
    name: str
    shape: list          # ints for fixed dims, strings for symbolic ones, None for unknown
    type: str            # e.g. "tensor(float)"
    dtype: np.dtype


@dataclasses.dataclass
class Step:
    """One call of the run loop: an ONNX node, or a fused chain of them."""
    name: str
    op_type: str
    fn: Callable
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict
    nodes: tuple[str, ...]        # names of the ONNX nodes this step computes
    kernel: str                   # what runs it, for --explain
    gpu: str | None               # its GPU kernel, if it has one
    shape_only: bool = False
    where: str = "host"           # backend="gpu": "gpu", "host" or "transfer"
    release: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()  # tensors of the original graph a fused step never materializes


_TENSOR_TYPE = {
    "FLOAT": "float", "DOUBLE": "double", "FLOAT16": "float16", "INT8": "int8", "UINT8": "uint8",
    "INT16": "int16", "UINT16": "uint16", "INT32": "int32", "UINT32": "uint32", "INT64": "int64",
    "UINT64": "uint64", "BOOL": "bool",
}


class Session:
    def __init__(self, model, backend: str = "cpu", *, fuse: bool = True,
                 threads: int | None = None):
        if backend not in ("cpu", "gpu"):
            raise ValueError(f"backend: expected 'cpu' or 'gpu', got {backend!r}")
        self.backend = backend
        self.threads = threads
        # Runs reuse freed memory instead of paging it in again (graph/memory.py).
        self.keeps_freed_memory = memory.keep_freed_memory()
        model, folder, path = _load(model)
        graph = model.graph
        self.opset = _default_opset(model)
        # One list of the node objects: ids below key on them (protobuf may hand out a new
        # wrapper object on every iteration).
        graph_nodes = list(graph.node)
        # Our own checks first (their messages name the node or tensor), then onnx.checker's.
        entries = _lookup_ops(graph_nodes, self.opset)
        if len(graph.sparse_initializer):
            raise ValueError("model: sparse initializers are not supported")
        attrs = {}
        for node, entry in zip(graph_nodes, entries, strict=True):
            attrs[id(node)] = _node_attributes(node, entry, folder)
        constants: dict[str, np.ndarray] = {}
        for init in graph.initializer:
            constants[init.name] = to_array(init, folder, f"initializer {init.name!r}")
        try:
            # From a path, the checker resolves external data files against the model's folder.
            onnx.checker.check_model(path if path and _has_external_data(model) else model)
        except onnx.checker.ValidationError as exc:
            raise ValueError(f"model: rejected by onnx.checker: {exc}") from None

        # -- Constant nodes are evaluated now, once --------------------------------------------
        nodes = []
        for node, entry in zip(graph_nodes, entries, strict=True):
            if node.op_type == "Constant":
                constants[node.output[0]] = _call(node, entry.fn, (), attrs[id(node)])
            else:
                nodes.append((node, entry))

        # -- inputs, outputs, inferred types ---------------------------------------------------
        self._inputs = [_node_arg(v) for v in graph.input if v.name not in constants]
        self._outputs = [_node_arg(v) for v in graph.output]
        self.value_info = _infer(model)
        order = _topological_order(nodes, set(constants) | {a.name for a in self._inputs})

        # -- fusion and weight preparation ----------------------------------------------------
        graph_outputs = {o.name for o in self._outputs}
        index = fusion.GraphIndex([n for n, _ in order], constants, graph_outputs)
        groups = []
        if fuse:
            groups = fusion.find_dynamic_groups([n for n, _ in order], index)
            groups += fusion.find_qlinear_groups([n for n, _ in order], index)
            float32 = {name for name, (elem, _) in self.value_info.items() if elem == 1}
            groups += fusion.find_gelu_groups([n for n, _ in order], index, float32)
            groups += fusion.find_residual_layer_norm_groups([n for n, _ in order], index, float32)
            softmax_13 = {id(n) for n, e in order if e.fn is onnx_ops.Softmax}
            groups += fusion.find_scaled_softmax_groups(
                [n for n, _ in order], index, float32, lambda n: id(n) in softmax_13)
        self._prepared: dict[str, gemm.PreparedB] = {}
        self._steps = self._plan(order, groups, constants, attrs, index)
        self._planned_steps = self._steps   # what gpu_plan() places, before CPU-only rewrites
        if backend == "cpu" and fuse:
            self._steps = _quantize_inside_gemms(self._steps, graph_outputs, self.threads)
            self._steps = _merge_sibling_gemms(self._steps, graph_outputs, self.threads)
            self._steps = _fuse_attention(self._steps, graph_outputs, self.threads)
            self._steps = _quantize_in_gelus(self._steps, graph_outputs)
            self._steps = _ranges_from_producers(self._steps, graph_outputs)
        if backend == "cpu":
            self._steps = _reuse_shape_results(self._steps, set(constants), graph_outputs)
        self._constants = constants
        # What a result must not be a view of (_owned): the weights, and (per run, below) the
        # kept results of the shape steps.
        self._constant_roots = frozenset(id(_root(c)) for c in constants.values())
        self._gpu_constants: dict = {}
        if backend == "gpu":
            self._place_on_gpu()
        self._release_after(graph_outputs)
        # Steps whose results follow from the input shapes alone are skipped in a run whose
        # inputs have the last full run's shapes; their results are kept from it (_execute).
        self._shape_steps_skipped = [s for s in self._steps
                                     if not isinstance(s.fn, _SameInputsSameResult)]
        # (input shapes, {name: value}, the ids of what a result must not be a view of)
        self._shape_results: tuple | None = None

    def gpu_plan(self) -> gpu_plan.GpuPlan:
        """Where each step would run with backend="gpu", and the transfers (a pure plan: nothing
        is uploaded; a GPU Session's steps are this plan's)."""
        cpu_steps = self._planned_steps
        inputs = {a.name: a.dtype for a in self._inputs}

        def dtype_of(name):
            if name in self._constants:
                return self._constants[name].dtype
            if name in inputs:
                return inputs[name]
            elem = self.value_info.get(name, (0, None))[0]
            return ONNX_TO_NUMPY.get(elem)

        def shape_of(name):
            return self.value_info.get(name, (0, None))[1]

        return gpu_plan.place(cpu_steps, Step, self._constants, dtype_of, shape_of, list(inputs),
                              [o.name for o in self._outputs])

    def _place_on_gpu(self) -> None:
        from dispatch import gpu
        why = gpu.unavailable_reason()
        if why:
            raise RuntimeError(f"backend: 'gpu' needs a GPU adapter: {why}")
        plan = self.gpu_plan()
        for step in plan.steps:
            if step.where == "gpu" and hasattr(step.fn, "load"):
                step.fn.load()
        for name in plan.gpu_constants:
            self._gpu_constants[f"{name}@gpu"] = gpu_plan.upload(self._constants[name])
        self._steps = plan.steps

    # -- planning ------------------------------------------------------------------------------

    def _plan(self, order, groups, constants, attrs, index) -> list[Step]:
        path = gemm_path()
        fused_at = {}
        for group in groups:
            if hasattr(group.fn, "threads"):
                group.fn.threads = self.threads
            fused_at[id(group.nodes[-1])] = group
            for node in group.nodes:
                fused_at.setdefault(id(node), None)
            if group.weight:
                self._remember_weight(group.weight, [n.name for n in group.nodes], group.fn.prepared)
        steps = []
        for node, entry in order:
            if id(node) in fused_at:
                group = fused_at[id(node)]
                if group is not None:
                    steps.append(Step(
                        name=group.anchor, op_type=group.kind,
                        fn=group.fn, inputs=tuple(group.inputs), outputs=(group.output,), attrs={},
                        nodes=tuple(x.name for x in group.nodes),
                        hidden=tuple(o for x in group.nodes for o in x.output if o != group.output),
                        kernel=_group_kernel(group, path),
                        gpu=_GROUP_GPU_KERNEL.get(group.kind, "gemm.gemm_i8")))
                continue
            step = Step(name=node.name or node.output[0], op_type=node.op_type, fn=entry.fn,
                        inputs=tuple(node.input), outputs=tuple(node.output),
                        attrs=attrs[id(node)], nodes=(node.name,), kernel="numpy",
                        gpu=entry.gpu, shape_only=entry.shape)
            if "_threads" in inspect.signature(entry.fn).parameters:
                step.attrs = {**step.attrs, "_threads": self.threads}
            if node.op_type == "MatMul":
                step.fn = FloatMatMul(self.threads or _cores())
                step.kernel = "numpy matmul (BLAS, 1 thread per piece)"
            elif entry.fn is onnx_ops.Softmax:
                step.fn = FloatSoftmax(self.threads)
                step.kernel = "ops.softmax(float32_steps=True) (last axis), one pass"
            elif node.op_type in _OPS_KERNEL:
                step.kernel = _OPS_KERNEL[node.op_type]
            self._prepare_node(step, node, index)
            steps.append(step)
        return steps

    def _prepare_node(self, step: Step, node, index) -> None:
        """MatMulInteger / QLinearMatMul with constant 2-D weights: prepare them now."""
        w_pos = {"MatMulInteger": 1, "QLinearMatMul": 3}.get(node.op_type)
        if w_pos is None:
            return
        w = index.const(node.input[w_pos])
        zp_pos = 3 if node.op_type == "MatMulInteger" else 5
        zb = index.const(node.input[zp_pos]) if len(node.input) > zp_pos else None
        if w is None or w.ndim != 2 or w.dtype not in (np.int8, np.uint8) or \
                (len(node.input) > zp_pos and node.input[zp_pos] and zb is None) or \
                (zb is not None and zb.size not in (1, w.shape[1])):
            return
        w_scale = index.const(node.input[4]) if node.op_type == "QLinearMatMul" else None
        prepared, b_zero_point = fusion.prepare_weight(w, zb, w_scale)
        self._remember_weight(node.input[w_pos], [node.name], prepared)
        step.fn = _PreparedMatMul(node.op_type, prepared, b_zero_point, w.shape, self.threads)
        step.inputs = tuple(i if j != w_pos and j != zp_pos else "" for j, i in enumerate(node.input))
        step.kernel = f"gemm.gemm_i8 {gemm_path()} K={w.shape[0]} N={w.shape[1]} prepared"

    def _remember_weight(self, weight: str, node_names, prepared) -> None:
        self._prepared[weight] = prepared
        for name in node_names:
            if name:
                self._prepared[name] = prepared

    def _release_after(self, keep: set[str]) -> None:
        last_reader = {}
        for i, step in enumerate(self._steps):
            for name in step.inputs:
                if name:
                    last_reader[name] = i
        for i, step in enumerate(self._steps):
            step.release = tuple(sorted(
                name for name in set(step.inputs)
                if name and last_reader[name] == i and name not in keep
                and name not in self._constants and name not in self._gpu_constants))

    # -- onnxruntime-style interface -----------------------------------------------------------

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def run(self, output_names, feeds: dict, *, timings: dict | None = None) -> list[np.ndarray]:
        """The requested outputs (all, for None), in order. `timings`, if given, gathers the
        seconds spent per op type."""
        names = [o.name for o in self._outputs] if output_names is None else list(output_names)
        known = {o.name for o in self._outputs}
        for name in names:
            if name not in known:
                raise ValueError(f"output_names: {name!r} is not an output of the model "
                                 f"(outputs: {sorted(known)}); use run_until for others")
        feeds = self._check_feeds(feeds)
        with blas_single_threaded():
            values = self._execute(feeds, None, timings)
        kept = self._kept_roots()
        return [_owned(_host(values[name]), kept, feeds) for name in names]

    def run_until(self, tensor_name: str, feeds: dict) -> np.ndarray:
        """The tensor `tensor_name` (any tensor the plan computes, an input or a constant),
        running only the steps up to the one that produces it."""
        if tensor_name in self._constants:
            return self._constants[tensor_name].copy()
        producer = next((i for i, s in enumerate(self._steps) if tensor_name in s.outputs), None)
        if producer is None:
            if any(a.name == tensor_name for a in self._inputs):
                return np.array(feeds[tensor_name])
            inside = [s.name for s in self._steps if tensor_name in s.hidden]
            hint = (f"; it lies inside the fused step {inside[0]!r} (build the Session with "
                    "fuse=False to see it)" if inside else "")
            raise ValueError(f"tensor_name: no tensor {tensor_name!r} in the plan{hint}")
        feeds = self._check_feeds(feeds)
        with blas_single_threaded():
            values = self._execute(feeds, producer, None, exact_last=True)
        return _owned(_host(values[tensor_name]), self._kept_roots(), feeds)

    def prepared_weight(self, name: str) -> gemm.PreparedB:
        """The PreparedB of a quantized weight, by its initializer's name or by the name of a node
        that reads it (a MatMulInteger, QLinearMatMul, or any node of a fused chain)."""
        prepared = self._prepared.get(name)
        if prepared is None:
            raise KeyError(f"name: no prepared weight for {name!r} (prepared: "
                           f"{sorted(self._prepared)})")
        return prepared

    def constant(self, name: str) -> np.ndarray:
        """A copy of an initializer or Constant's value (e.g. a bias to shortlist with a weight)."""
        if name not in self._constants:
            raise KeyError(f"name: no initializer or constant {name!r}")
        return self._constants[name].copy()

    @property
    def steps(self) -> list[Step]:
        return list(self._steps)

    # -- the loop ------------------------------------------------------------------------------

    def _execute(self, feeds: dict, stop: int | None, timings: dict | None,
                 exact_last: bool = False) -> dict:
        """exact_last: the last step computes its output exactly even where the plan lets it be
        exact only for the quantizing next (run_until shows the tensor itself)."""
        values = dict(self._constants)
        values.update(self._gpu_constants)
        values.update(feeds)
        steps = self._steps if stop is None else self._steps[:stop + 1]
        # A full run records the results of the steps that depend on the input shapes alone
        # (_reuse_shape_results); the next full run with inputs of those shapes starts from them
        # and runs the other steps only: ~60 Python calls fewer in the int8 encoder.
        shapes = tuple((name, tuple(v.shape), str(v.dtype)) for name, v in feeds.items())
        recorded = self._shape_results
        record = None
        if stop is None and recorded is not None and recorded[0] == shapes:
            values.update(recorded[1])
            steps = self._shape_steps_skipped
        elif stop is None:
            record = {}
        if exact_last and steps and steps[-1].attrs.get("quantized_only"):
            last = steps[-1]
            steps = [*steps[:-1], dataclasses.replace(
                last, attrs={k: v for k, v in last.attrs.items() if k != "quantized_only"})]
        for step in steps:
            args = [values[name] if name else None for name in step.inputs]
            t0 = time.perf_counter() if timings is not None else 0.0
            result = _call_step(step, args)
            if timings is not None:
                timings[step.op_type] = timings.get(step.op_type, 0.0) + time.perf_counter() - t0
            if not isinstance(result, tuple):
                values[step.outputs[0]] = result
            else:
                # Optional outputs the node does not name are dropped.
                for name, value in zip(step.outputs, result, strict=False):
                    if name:
                        values[name] = value
            if record is not None and isinstance(step.fn, _SameInputsSameResult):
                record.update((name, values[name]) for name in step.outputs if name)
            if stop is None:
                for name in step.release:
                    del values[name]
        if record is not None:
            # The next runs read these again: a caller's result that is one of them (an
            # Identity of a Shape) must be a copy, or writing to it would change those runs.
            self._shape_results = (shapes, record, self._constant_roots | {
                id(_root(v)) for v in record.values() if isinstance(v, np.ndarray)})
        return values

    def _kept_roots(self) -> frozenset:
        recorded = self._shape_results
        return self._constant_roots if recorded is None else recorded[2]

    def _check_feeds(self, feeds: dict) -> dict:
        if not isinstance(feeds, dict):
            raise TypeError(f"feeds: expected a dict of input name -> numpy array, got "
                            f"{type(feeds).__name__}")
        expected = {a.name: a for a in self._inputs}
        unknown = set(feeds) - expected.keys()
        if unknown:
            raise ValueError(f"feeds: unknown input(s) {sorted(unknown)}; the model's inputs are "
                             f"{sorted(expected)}")
        checked = {}
        for name, arg in expected.items():
            if name not in feeds:
                raise ValueError(f"feeds: missing input {name!r}")
            value = feeds[name]
            if not isinstance(value, np.ndarray):
                raise TypeError(f"feeds[{name!r}]: expected a numpy array, got {type(value).__name__}")
            if value.dtype != arg.dtype:
                raise TypeError(f"feeds[{name!r}]: expected dtype {arg.dtype}, got {value.dtype}")
            if arg.shape is not None:
                if value.ndim != len(arg.shape) or any(
                        isinstance(d, int) and d != s for d, s in zip(arg.shape, value.shape, strict=False)):
                    raise ValueError(f"feeds[{name!r}]: expected shape {arg.shape}, got {value.shape}")
            checked[name] = value
        return checked


class _PreparedMatMul:
    """MatMulInteger or QLinearMatMul whose weight (and its zero point) were prepared at load."""

    def __init__(self, op_type, prepared, b_zero_point, shape, threads):
        self.op_type, self.prepared, self.b_zero_point, self.threads = (op_type, prepared,
                                                                        b_zero_point, threads)
        self.k, self.n = shape

    def __call__(self, a, *rest):
        if self.op_type == "MatMulInteger":
            za = rest[1] if len(rest) > 1 else None
        else:
            a_scale, za, _, w_scale, _, y_scale, y_zero_point = rest
        za = 0 if za is None else za.reshape(-1)
        if za.size > 1 if isinstance(za, np.ndarray) else False:
            raise ValueError("a_zero_point: per-row zero points with a prepared weight are not "
                             "supported")
        za = int(za[0]) if isinstance(za, np.ndarray) else 0
        acc = gemm.gemm_i8(a.reshape(-1, self.k), self.prepared, a_zero_point=za,
                           b_zero_point=self.b_zero_point, threads=self.threads)
        acc = acc.reshape(*a.shape[:-1], self.n)
        if self.op_type == "MatMulInteger":
            return acc
        return requantize(acc, a_scale, w_scale, y_scale, y_zero_point)


# ---------------------------------------------------------------------------------------------
# Loading and checking.


def _has_external_data(model) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def _load(model):
    """(ModelProto, folder for external data or None, path or None). The caller's ModelProto
    is copied."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy, None, None
    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            return onnx.load_model_from_string(bytes(model)), None, None
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ValueError(f"model: not a valid ONNX protobuf ({exc})") from None
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ValueError(f"model: no file {path!r}")
        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as exc:
            raise ValueError(f"model: {path!r} is not a valid ONNX protobuf ({exc})") from None
        return proto, os.path.dirname(os.path.abspath(path)), path
    raise TypeError(f"model: expected a path, bytes or an onnx.ModelProto, got {type(model).__name__}")


def _default_opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ValueError("model: imports no version of the default ONNX domain")


def _lookup_ops(graph_nodes, opset: int) -> list:
    entries, missing = [], {}
    for node in graph_nodes:
        entry, why = registry.lookup(node.op_type, opset, node.domain)
        entries.append(entry)
        if entry is None:
            missing.setdefault((node.op_type, node.domain, why), []).append(node.name or "?")
    if missing:
        lines = [f"{op}{f' (domain {dom})' if dom else ''}: {why}; nodes {', '.join(names[:5])}"
                 + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                 for (op, dom, why), names in missing.items()]
        raise ValueError("model: unsupported ops:\n  " + "\n  ".join(lines))
    return entries


def _node_attributes(node, entry, folder) -> dict:
    allowed = entry.attributes
    attrs = {}
    where = f"node {node.name!r} ({node.op_type})"
    for a in node.attribute:
        if a.name not in allowed:
            raise ValueError(f"{where}: unsupported attribute {a.name!r}")
        if a.ref_attr_name:
            raise ValueError(f"{where}: attribute {a.name!r} refers to a function attribute")
        if a.type == onnx.AttributeProto.TENSOR:
            attrs[a.name] = to_array(a.t, folder, f"{where} attribute {a.name!r}")
        elif a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT,
                        onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS,
                        onnx.AttributeProto.STRING):
            value = helper.get_attribute_value(a)
            attrs[a.name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        else:
            raise ValueError(f"{where}: attribute {a.name!r} of type "
                             f"{onnx.AttributeProto.AttributeType.Name(a.type)} is not supported")
    if entry.check is not None:
        try:
            entry.check(attrs)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if entry.pass_output_count:
        attrs["_outputs"] = len(node.output)
    if len(node.input) > _max_inputs(entry):
        raise ValueError(f"{where}: {len(node.input)} inputs, more than its function takes")
    taken = set(list(_positional_names(entry))[:len(node.input)])
    clash = taken & attrs.keys()
    if clash:
        raise ValueError(f"{where}: {sorted(clash)} given both as input and as attribute")
    return attrs


def _positional_names(entry):
    return [p.name for p in inspect.signature(entry.fn).parameters.values()
            if p.kind == p.POSITIONAL_OR_KEYWORD]


def _max_inputs(entry) -> int:
    params = inspect.signature(entry.fn).parameters.values()
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 1 << 30
    return len(_positional_names(entry))


def _node_arg(value_info) -> NodeArg:
    t = value_info.type
    if not t.HasField("tensor_type"):
        raise ValueError(f"graph input/output {value_info.name!r}: only tensors are supported")
    elem = t.tensor_type.elem_type
    dtype = numpy_dtype(elem, f"graph input/output {value_info.name!r}")
    shape = None
    if t.tensor_type.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in t.tensor_type.shape.dim]
    name = _TENSOR_TYPE.get(type_name(elem), type_name(elem).lower())
    return NodeArg(value_info.name, shape, f"tensor({name})", dtype)


def _infer(model) -> dict:
    """Tensor name -> (dtype, shape) from onnx's shape inference (strict: an inconsistent model
    is rejected here)."""
    try:
        inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                data_prop=True)
    except Exception as exc:
        raise ValueError(f"model: shape inference failed: {exc}") from None
    info = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        tt = v.type.tensor_type
        if not v.type.HasField("tensor_type"):
            raise ValueError(f"tensor {v.name!r}: only tensors are supported")
        if tt.elem_type:
            numpy_dtype(tt.elem_type, f"tensor {v.name!r}")
        shape = None
        if tt.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                          for d in tt.shape.dim)
        info[v.name] = (tt.elem_type, shape)
    return info


def _topological_order(nodes, available: set[str]) -> list:
    """Nodes in an order where each runs after its inputs exist (graph order among the ready
    ones). A missing input or a cycle is an error naming the node."""
    available = set(available) | {""}
    produced_by = {}
    for node, _ in nodes:
        for name in node.output:
            if name in produced_by or name in available - {""}:
                raise ValueError(f"node {node.name!r} ({node.op_type}): output {name!r} is "
                                 "already defined")
            produced_by[name] = node
    pending = list(nodes)
    order = []
    while pending:
        ready = [(n, e) for n, e in pending if all(i in available for i in n.input)]
        if not ready:
            node = pending[0][0]
            missing = [i for i in node.input if i not in available and i not in produced_by]
            if missing:
                raise ValueError(f"node {node.name!r} ({node.op_type}): input {missing[0]!r} is "
                                 "not a graph input, initializer or node output")
            raise ValueError(f"node {node.name!r} ({node.op_type}): the graph has a cycle")
        ready_ids = {id(n) for n, _ in ready}
        pending = [(n, e) for n, e in pending if id(n) not in ready_ids]
        order.extend(ready)
        for n, _ in ready:
            available.update(n.output)
    return order


def _call(node, fn, args, attrs):
    try:
        return fn(*args, **attrs)
    except Exception as exc:
        raise NodeError(f"node {node.name!r} ({node.op_type}): {type(exc).__name__}: {exc}") from exc


_QUANTIZES_A = "; quantizes float A while packing it (a_scale)"


def _quantize_inside_gemms(steps: list[Step], graph_outputs: set[str], threads) -> list[Step]:
    """The steps with each DynamicQuantizeLinear whose quantized output only fused GEMMs read
    (as their A) reduced to its scale and zero point: those GEMMs read its float input and
    quantize it, to the same uint8 values, while packing it (gemm_i8's a_scale). A is then read
    once per GEMM instead of written and read again, and the op's quantizing pass over the
    threads is gone."""
    readers: dict[str, list[tuple[Step, int]]] = {}
    for step in steps:
        for pos, name in enumerate(step.inputs):
            readers.setdefault(name, []).append((step, pos))
    rewritten = {}
    for step in steps:
        if step.op_type != "DynamicQuantizeLinear" or len(step.outputs) < 3 or \
                step.outputs[0] in graph_outputs:
            continue
        users = readers.get(step.outputs[0], [])
        if not users or any(r.op_type != "DynamicQuantMatMul" or pos != 0 for r, pos in users):
            continue
        params = fusion.DynamicQuantizeParams()
        params.threads = threads
        rewritten[id(step)] = dataclasses.replace(
            step, op_type="DynamicQuantizeLinear(scale)", fn=params, attrs={},
            outputs=step.outputs[1:3], hidden=(step.outputs[0],),
            kernel="ops.dynamic_quantize_params; the GEMMs reading it quantize x as they pack it")
        for reader, _ in users:
            rewritten[id(reader)] = dataclasses.replace(
                reader, inputs=(step.inputs[0], *reader.inputs[1:]),
                attrs={**reader.attrs, "quantize_a": True}, kernel=reader.kernel + _QUANTIZES_A)
    return [rewritten.get(id(s), s) for s in steps]


def _merge_sibling_gemms(steps: list[Step], graph_outputs: set[str], threads) -> list[Step]:
    """The steps with the fused GEMMs that read the same quantized A (and quantize it alike)
    merged into one step at the first one's place (fusion.SiblingDynamicQuantMatMuls), when
    their weights agree in K and all or none have a bias."""
    siblings: dict[tuple, list[Step]] = {}
    for step in steps:
        if step.op_type == "DynamicQuantMatMul" and \
                isinstance(step.fn, fusion.DynamicQuantMatMul) and \
                not any(o in graph_outputs for o in step.outputs):
            key = (step.inputs, bool(step.attrs.get("quantize_a")))
            siblings.setdefault(key, []).append(step)
    merged, dropped = {}, set()
    for group in siblings.values():
        parts = [s.fn for s in group]
        if len(group) < 2 or not fusion.SiblingDynamicQuantMatMuls.can_merge(parts):
            continue
        fn = fusion.SiblingDynamicQuantMatMuls(parts)
        fn.threads = threads
        first = group[0]
        merged[id(first)] = dataclasses.replace(
            first, fn=fn, outputs=tuple(o for s in group for o in s.outputs),
            nodes=tuple(x for s in group for x in s.nodes),
            hidden=tuple(h for s in group for h in s.hidden),
            kernel=f"{first.kernel}; {len(group)} GEMMs on one A merged: N={fn.n} "
                   f"({' + '.join(str(p.n) for p in parts)}), one output sliced")
        dropped.update(id(s) for s in group[1:])
    return [merged.get(id(s), s) for s in steps if id(s) not in dropped]


def _readers(steps: list[Step]) -> dict[str, list[Step]]:
    """Tensor name -> the steps that read it, in plan order (a step once per input it reads it
    as)."""
    readers: dict[str, list[Step]] = {}
    for step in steps:
        for name in step.inputs:
            if name:
                readers.setdefault(name, []).append(step)
    return readers


# Steps whose output holds the values of their first input, rearranged: a tensor's range is its
# source's.
_SAME_VALUES = {"Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten"}


def _ranges_from_producers(steps: list[Step], graph_outputs: set[str]) -> list[Step]:
    """The steps with each DynamicQuantizeLinear(scale) whose input a fused Gelu, LayerNorm or
    attention step writes (or writes and a Reshape or Transpose rearranges) taking that input's
    min and max from the writer, which finds them block by block while the block is still in
    cache, instead of reading the whole tensor again afterwards."""
    writer = {name: step for step in steps for name in step.outputs}
    rewritten = {}
    for step in steps:
        if step.op_type != "DynamicQuantizeLinear(scale)" or step.fn.of_range:
            continue
        source = writer.get(step.inputs[0])
        while source is not None and source.op_type in _SAME_VALUES and source.inputs:
            source = writer.get(source.inputs[0])
        if source is None or not isinstance(source.fn, (fusion.GeluSteps,
                                                        fusion.ResidualLayerNorm,
                                                        FloatAttention)) \
                or len(source.outputs) != 1 or id(source) in rewritten:
            continue
        range_name = f"{source.outputs[0]}::range"
        attrs = {**source.attrs, "with_range": True}
        kernel = source.kernel + "; reports its output's range for the quantizing next"
        rewritten[id(source)] = dataclasses.replace(source, outputs=(*source.outputs, range_name),
                                                    attrs=attrs, kernel=kernel)
        params = fusion.DynamicQuantizeParams(of_range=True)
        rewritten[id(step)] = dataclasses.replace(
            step, fn=params, inputs=(range_name,),
            kernel="scale and zero point from the range its input's writer reported; the GEMMs "
                   "reading it quantize x as they pack it")
    return [rewritten.get(id(s), s) for s in steps]


def _quantize_in_gelus(steps: list[Step], graph_outputs: set[str]) -> list[Step]:
    """The steps with each fused Gelu whose output only a DynamicQuantizeLinear(scale) and the
    GEMMs quantizing with its scale and zero point read merged with that step into one
    ops.gelu_dynamic_quantize_linear: it writes DynamicQuantizeLinear's own outputs (the uint8
    values, which the GEMMs then read as their A, the scale and the zero point), exact, and never
    the float32 Gelu. That is 1 byte a value written and read instead of 4, and the GEMMs copy A
    as they pack it instead of dividing it by the scale. The Gelu's float32 output stays a named
    output of the step, computed (exactly) only when run_until asks for it."""
    writer = {name: step for step in steps for name in step.outputs}
    readers = _readers(steps)
    rewritten, dropped = {}, set()
    for step in steps:
        if step.op_type != "DynamicQuantizeLinear(scale)" or step.fn.of_range:
            continue
        source = writer.get(step.inputs[0])
        if source is None or id(source) in rewritten or \
                not _only_quantized_by(source, step, readers, graph_outputs):
            continue
        quantized = step.hidden[0]    # DynamicQuantizeLinear's y, which the GEMMs now read
        fn = fusion.GeluDynamicQuantize()
        fn.threads = source.fn.threads
        rewritten[id(source)] = dataclasses.replace(
            source, op_type="Gelu(Erf)+DynamicQuantizeLinear", fn=fn,
            outputs=(quantized, *step.outputs, source.outputs[0]),
            attrs={"quantized_only": True}, nodes=source.nodes + step.nodes,
            hidden=source.hidden + step.hidden[1:],
            kernel="ops.gelu_dynamic_quantize_linear: the range from x, a close erf exact where "
                   "the rounding can tell, uint8 out (two passes; the float Gelu only for "
                   "run_until)")
        dropped.add(id(step))
        for reader in readers[source.outputs[0]]:
            if reader is not step:
                rewritten[id(reader)] = dataclasses.replace(
                    reader, inputs=(quantized, *reader.inputs[1:]),
                    attrs={k: v for k, v in reader.attrs.items() if k != "quantize_a"},
                    kernel=reader.kernel.replace(_QUANTIZES_A, ""))
    return [rewritten.get(id(s), s) for s in steps if id(s) not in dropped]


def _only_quantized_by(source: Step, quantize: Step, readers, graph_outputs) -> bool:
    """Whether `source` is a fused Gelu that `quantize` (a DynamicQuantizeLinear(scale)) reads
    directly and whose output every other reader only quantizes with that step's scale and zero
    point: fused GEMMs that quantize their A as they pack it (not a graph output either)."""
    name = source.outputs[0]
    if not isinstance(source.fn, fusion.GeluSteps) or quantize.inputs[0] != name or \
            name in graph_outputs:
        return False
    parameters = tuple(quantize.outputs)
    return all(isinstance(r.fn, (fusion.DynamicQuantMatMul, fusion.SiblingDynamicQuantMatMuls))
               and r.attrs.get("quantize_a") and r.inputs[0] == name
               and tuple(r.inputs[1:3]) == parameters
               for r in readers.get(name, []) if r is not quantize)


def _fuse_attention(steps: list[Step], graph_outputs: set[str], threads) -> list[Step]:
    """The steps with each float MatMul -> Div+Softmax -> MatMul chain (attention: scores, their
    softmax, its product with V) whose two inner tensors nothing else reads made one step at the
    last one's place (graph/float_attention.py)."""
    readers = _readers(steps)

    def sole_reader(step: Step, op_type: str, kind) -> Step | None:
        if len(step.outputs) != 1 or step.outputs[0] in graph_outputs:
            return None
        found = readers.get(step.outputs[0], [])
        if len(found) != 1 or found[0].op_type != op_type or not isinstance(found[0].fn, kind):
            return None
        return found[0]

    fused, dropped = {}, set()
    for first in steps:
        if first.op_type != "MatMul" or not isinstance(first.fn, FloatMatMul) or \
                len(first.inputs) != 2:
            continue
        softmax = sole_reader(first, "Div+Softmax", FloatSoftmax)
        second = softmax and sole_reader(softmax, "MatMul", FloatMatMul)
        if second is None or second.inputs[0] != softmax.outputs[0] or \
                second.inputs[1] in (first.outputs[0], softmax.outputs[0]):
            continue
        fused[id(second)] = dataclasses.replace(
            second, op_type="Attention(MatMul+Div+Softmax+MatMul)",
            fn=FloatAttention(first.fn, softmax.fn, second.fn, threads),
            inputs=(*first.inputs, second.inputs[1]),
            nodes=first.nodes + softmax.nodes + second.nodes,
            hidden=first.outputs + softmax.hidden + softmax.outputs + second.hidden,
            kernel="ops/cpu/attention_pass.py: one pass per (batch, head), scores kept in cache "
                   "(checked against the three steps on each matrix shape's first call)",
            gpu=None)
        dropped.update((id(first), id(softmax)))
    return [fused.get(id(s), s) for s in steps if id(s) not in dropped]


class _SameInputsSameResult:
    """A step's function that returns its previous result when called with the same arguments:
    for Shape, an input of the same shape; for the steps computing on shapes and constants
    only, the very same input objects (kept here, so none can be freed and another take its id).
    Nothing computes on those results in place, and none is a graph output, so sharing them
    between runs is safe. Saves the Shape -> Gather -> Unsqueeze -> Concat chains that feed
    Reshape their Python calls on every run once the input shapes repeat (56 of the int8
    encoder's 107 steps)."""

    def __init__(self, fn, by_shape: bool):
        self.fn, self.by_shape = fn, by_shape
        self.last = None   # (key, result), replaced as one object

    def __call__(self, *args, **attrs):
        key = args[0].shape if self.by_shape else args
        last = self.last
        if last is not None and len(last[0]) == len(key) and (
                last[0] == key if self.by_shape
                else all(a is b for a, b in zip(last[0], key, strict=True))):
            return last[1]
        result = self.fn(*args, **attrs)
        self.last = (key, result)
        return result


def _reuse_shape_results(steps: list[Step], constants: set[str], graph_outputs: set[str]):
    """The steps, those whose results follow from the input shapes alone (Shape, and steps whose
    every input is a constant or such a result) wrapped in _SameInputsSameResult."""
    static = set(constants)
    out = []
    for step in steps:
        inputs = [n for n in step.inputs if n]
        is_shape = step.op_type == "Shape" and len(inputs) == 1
        if not (is_shape or (inputs and all(n in static for n in inputs))) or \
                any(o in graph_outputs for o in step.outputs):
            out.append(step)
            continue
        static.update(o for o in step.outputs if o)
        out.append(dataclasses.replace(step, fn=_SameInputsSameResult(step.fn, is_shape)))
    return out


def _call_step(step: Step, args):
    try:
        return step.fn(*args, **step.attrs)
    except Exception as exc:
        raise NodeError(f"node {step.name!r} ({step.op_type}): {type(exc).__name__}: {exc}") from exc


def _host(value):
    """A GPU result as numpy (its one download); host values as they are."""
    return value.numpy() if type(value).__name__ == "GpuArray" else value


def _owned(value, kept_roots: frozenset, feeds):
    """What the caller gets: a fresh array, never a view of a weight, of a result the session
    keeps for later runs (`kept_roots`: the ids of their base arrays) or of the caller's feed."""
    if not isinstance(value, np.ndarray):
        return np.asarray(value)
    root = _root(value)
    if not value.flags.writeable or id(root) in kept_roots or \
            any(root is _root(f) for f in feeds.values()):
        return np.array(value)
    return value


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


# What runs the float32 forms of these ops (other dtypes: numpy).
_OPS_KERNEL = {
    "DynamicQuantizeLinear": "min/max + ops.quantize_linear, chunks",
    "LayerNormalization": "ops.layer_norm(float32_steps=True)",
    "Erf": "ops.erf",
}

_GROUP_GPU_KERNEL = {"Gelu(Erf)": "ops.gelu", "Add+LayerNormalization": "ops.layer_norm",
                     "Div+Softmax": "ops.softmax"}


def _group_kernel(group, path: str) -> str:
    if group.kind == "Gelu(Erf)":
        return "ops.gelu(float32_steps=True), one pass"
    if group.kind == "Add+LayerNormalization":
        return "ops.layer_norm(residual=, float32_steps=True), one pass"
    if group.kind == "Div+Softmax":
        return "ops.softmax(float32_steps=True, divide_by=), one pass"
    how = ("uint8 A, zero point, out_scale, bias" if group.kind == "DynamicQuantMatMul"
           else "int32 out + requantize + dequantize")
    return f"gemm.gemm_i8 {path} K={group.fn.k} N={group.fn.n} prepared, {how}"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gemm_path() -> str:
    import dispatch
    try:
        return "cpu:" + dispatch.resolve("gemm_i8", None).path
    except RuntimeError as exc:
        return f"cpu (no path: {exc})"

"""Where each step of a plan runs with backend="gpu", and the host transfers that implies.

`place(steps, ...)` walks the planned steps once, in order, at load, and returns a new list in
which every step runs either on the GPU (its graph/gpu_ops.py form) or on the host (its CPU
function), with explicit Upload and Download steps wherever a tensor must cross -- so the run
loop stays a loop, and `--explain` and `gpu.TRANSFERS` show the same transfers. The rules:

  - a model input of a GPU element type (float32, int32, int8, uint8) that some GPU-capable
    step reads is uploaded first, once; other inputs (token ids as int64) stay on the host;
  - constants that GPU steps read are uploaded once at load (the returned `gpu_constants`),
    never during a run;
  - shape-only steps (Shape, Reshape, Unsqueeze, Squeeze, Flatten, Identity) run where their
    data is: Shape reads the shape on the host; the others are views of the same GPU buffer;
  - a step with a GPU form runs on the GPU when one of its data inputs is there, or when it
    computes on float32 (work worth a GPU); integer shape arithmetic stays on the host;
  - a step without a GPU form for its types runs on the host: its GPU inputs are downloaded
    before it (a Download step each), and its result is uploaded for the next GPU step that
    reads it (an Upload step). Nothing fails for want of a GPU kernel: it costs transfers;
  - a host tensor computed from shapes and constants alone (a decoder's causal mask: Shape,
    Range, Greater, Where) depends on the input shapes only: its Upload step keeps the GPU copy
    and uploads again only when the host value changes (a new sequence length).
Tensors moved to the other side go by `name@host` / `name@gpu` in the run's values.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dispatch.gpu_array import DTYPES as GPU_DTYPES
from dispatch.gpu_array import GpuArray

from . import gpu_ops


def upload(x):
    return GpuArray.from_numpy(np.ascontiguousarray(x))


def download(x):
    return x.numpy()


class ShapeDerivedUpload:
    """The upload of a tensor computed from shapes and constants alone: made again only when
    its value changes (compared on the host, where it is computed anyway)."""

    def __init__(self):
        self.host = self.gpu = None

    def __call__(self, x):
        if self.gpu is None or x.shape != self.host.shape or x.dtype != self.host.dtype or \
                not np.array_equal(x, self.host):
            self.host, self.gpu = np.array(x), upload(x)
        return self.gpu


@dataclasses.dataclass
class GpuPlan:
    steps: list
    gpu_constants: list          # constant names to upload at load (read as name@gpu)
    location: dict               # tensor name -> "gpu" or "host", where its final value lies
    no_form: list                # op types that run on the host because they have no GPU form


def place(steps, Step, constants: dict, dtype_of, shape_of, input_names, output_names) -> GpuPlan:
    location: dict[str, str] = {}
    moved: dict[str, str] = {}       # name -> its copy on the other side, made once
    gpu_constants: list[str] = []
    out: list = []
    no_form: list[str] = []

    forms = {id(s): gpu_ops.gpu_form(s, dtype_of, constants.get, shape_of) for s in steps}
    readers_with_form = {n for s in steps if forms[id(s)] is not None for n in s.inputs}
    for name in input_names:
        if name in readers_with_form and dtype_of(name) in GPU_DTYPES:
            out.append(Step(name=f"upload {name}", op_type="Upload", fn=upload, inputs=(name,),
                            outputs=(f"{name}@gpu",), attrs={}, nodes=(), kernel="model input",
                            gpu="upload", where="transfer"))
            moved[name] = f"{name}@gpu"
            location[name] = "gpu"
        else:
            location[name] = "host"

    def on_gpu(name):
        return location.get(name) == "gpu"

    def transfer(name, source, key, reader):
        kind = "Upload" if key.endswith("@gpu") else "Download"
        fn, why = (upload, f"for {reader}") if kind == "Upload" else (download, f"for {reader}")
        if kind == "Upload" and name in static:
            fn = ShapeDerivedUpload()
            why = f"for {reader}; shape-derived: uploaded again only when it changes"
        out.append(Step(name=f"{kind.lower()} {name}", op_type=kind, fn=fn, inputs=(source,),
                        outputs=(key,), attrs={}, nodes=(), kernel=why,
                        gpu=kind.lower(), where="transfer"))
        moved[name] = key

    def fetch(name, target, reader):
        """The name under which `name` is available on `target`, adding a transfer if needed.
        (Model inputs and constants are on the host under their own names; a GPU step reads a
        constant as name@gpu, uploaded at load.)"""
        if name in constants:
            if target == "gpu" and name not in gpu_constants:
                gpu_constants.append(name)
            return f"{name}@gpu" if target == "gpu" else name
        if name in input_names:
            if target == "gpu" and name not in moved:
                transfer(name, name, f"{name}@gpu", reader)
            return moved[name] if target == "gpu" else name
        if location.get(name, "host") == target:
            return name
        if name not in moved:
            transfer(name, name, f"{name}@{target}", reader)
        return moved[name]

    static = set(constants)   # tensors that depend on the input shapes only, not on their values
    for step in steps:
        if (step.op_type == "Shape" or all(n in static for n in step.inputs if n)) and \
                step.op_type not in ("Upload", "Download"):
            static.update(step.outputs)
        host_inputs = gpu_ops.HOST_INPUTS.get(step.op_type, set())
        data = [(j, n) for j, n in enumerate(step.inputs) if n and n not in constants]
        if step.shape_only:
            # Shape reads the shape of whatever it is given; the others follow their data.
            where = "host"
            if step.op_type != "Shape" and data and data[0][0] == 0 and on_gpu(data[0][1]):
                where = "gpu"
            inputs = tuple(n if step.op_type == "Shape" or not n else
                           fetch(n, where if j == 0 else "host", step.name)
                           for j, n in enumerate(step.inputs))
            fn = gpu_ops.view_form(step) if where == "gpu" else step.fn
            for name in step.outputs:
                location[name] = "host" if step.op_type == "Shape" else where
            out.append(dataclasses.replace(step, fn=fn, inputs=inputs, where=where,
                                           kernel="view" if where == "gpu" else step.kernel))
            continue
        form = forms[id(step)]
        float_work = any(dtype_of(n) == gpu_ops.FLOAT32 for j, n in data if j not in host_inputs)
        if form is not None and (any(on_gpu(n) for _, n in data) or float_work):
            fn, kernel = form
            inputs = tuple(fetch(n, "host" if j in host_inputs else "gpu", step.name) if n else n
                           for j, n in enumerate(step.inputs))
            out.append(dataclasses.replace(step, fn=fn, inputs=inputs, where="gpu",
                                           kernel=kernel))
            for name in step.outputs:
                location[name] = "gpu"
            continue
        if form is None and any(on_gpu(n) for _, n in data) and step.op_type not in no_form:
            no_form.append(step.op_type)
        inputs = tuple(fetch(n, "host", step.name) if n else n for n in step.inputs)
        out.append(dataclasses.replace(step, inputs=inputs, where="host"))
        for name in step.outputs:
            location[name] = "host"
    # A model output that is also a model input (an Identity graph) reads the feed itself.
    for name in output_names:
        location.setdefault(name, "host")
    return GpuPlan(out, gpu_constants, location, no_form)

"""onnx.backend.base.Backend over graph.Session, so onnx's own backend test suite runs against
the graph layer (tests/test_graph_backend.py).

    from graph.backend import GraphBackend
    rep = GraphBackend.prepare(model_proto)      # a Session inside
    outputs = rep.run([x, y])                    # inputs in the graph's input order
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

from .session import Session
from .tensors import to_array


class GraphBackendRep(BackendRep):
    def __init__(self, session: Session):
        self.session = session

    def run(self, inputs, **kwargs):
        names = [a.name for a in self.session.get_inputs()]
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(names, inputs, strict=False))
        feeds = {k: _array(v) for k, v in feeds.items()}
        outputs = self.session.run(None, feeds)
        return namedtupledict("Outputs", [o.name for o in self.session.get_outputs()])(*outputs)


def _array(value):
    """onnx's test data holds numpy scalars and, for some types, TensorProtos."""
    if isinstance(value, onnx.TensorProto):
        return to_array(value, None)
    return value if isinstance(value, np.ndarray) else np.asarray(value)


class GraphBackend(Backend):
    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> GraphBackendRep:
        if not cls.supports_device(device):
            raise ValueError(f"device: only 'CPU' is supported, got {device!r}")
        super().prepare(model, device, **kwargs)
        return GraphBackendRep(Session(model, backend="cpu"))

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        raise NotImplementedError("run_node: build a one-node model and use prepare/run")


prepare = GraphBackend.prepare
run_model = GraphBackend.run_model
supports_device = GraphBackend.supports_device

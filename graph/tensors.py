"""ONNX tensors -> numpy arrays, treating the model as untrusted input.

`to_array(tensor, folder)` checks, before allocating anything, that the bytes present (in the
protobuf or in the external file) are exactly what the declared dims and dtype need, and that an
external file lies inside the model's folder. Only the dtypes in ONNX_TO_NUMPY are supported;
anything else (strings, bfloat16, float8, 4-bit types) is an error naming the tensor.
"""

from __future__ import annotations

import math
import os

import numpy as np
from onnx import TensorProto

ONNX_TO_NUMPY = {
    TensorProto.FLOAT: np.dtype(np.float32),
    TensorProto.DOUBLE: np.dtype(np.float64),
    TensorProto.FLOAT16: np.dtype(np.float16),
    TensorProto.INT8: np.dtype(np.int8),
    TensorProto.UINT8: np.dtype(np.uint8),
    TensorProto.INT16: np.dtype(np.int16),
    TensorProto.UINT16: np.dtype(np.uint16),
    TensorProto.INT32: np.dtype(np.int32),
    TensorProto.UINT32: np.dtype(np.uint32),
    TensorProto.INT64: np.dtype(np.int64),
    TensorProto.UINT64: np.dtype(np.uint64),
    TensorProto.BOOL: np.dtype(np.bool_),
}
NUMPY_TO_ONNX = {v: k for k, v in ONNX_TO_NUMPY.items()}

# Where each dtype's values live when not in raw_data (TensorProto's typed fields).
_TYPED_FIELD = {
    TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data",
    TensorProto.INT64: "int64_data", TensorProto.UINT64: "uint64_data",
    TensorProto.UINT32: "uint64_data", TensorProto.INT32: "int32_data",
    TensorProto.INT16: "int32_data", TensorProto.UINT16: "int32_data",
    TensorProto.INT8: "int32_data", TensorProto.UINT8: "int32_data",
    TensorProto.BOOL: "int32_data", TensorProto.FLOAT16: "int32_data",
}

# A tensor that claims more elements than this is refused outright (about 16 GiB of float32).
MAX_ELEMENTS = 1 << 32


def type_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"type {elem_type}"


def numpy_dtype(elem_type: int, what: str) -> np.dtype:
    dtype = ONNX_TO_NUMPY.get(elem_type)
    if dtype is None:
        raise ValueError(f"{what}: element type {type_name(elem_type)} is not supported "
                         f"(supported: {', '.join(type_name(t) for t in ONNX_TO_NUMPY)})")
    return dtype


def to_array(tensor: TensorProto, folder: str | None, what: str | None = None) -> np.ndarray:
    """The tensor's values as a numpy array of its declared shape (checked, see module doc)."""
    what = what or f"tensor {tensor.name!r}"
    dtype = numpy_dtype(tensor.data_type, what)
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"{what}: negative dimension in {dims}")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise ValueError(f"{what}: declares {count} elements, more than the {MAX_ELEMENTS} allowed")
    if tensor.data_location == TensorProto.EXTERNAL:
        raw = _read_external(tensor, folder, count * dtype.itemsize, what)
        return np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(dims)
    if tensor.HasField("raw_data"):
        need = count * dtype.itemsize
        if len(tensor.raw_data) != need:
            raise ValueError(f"{what}: shape {dims} of {dtype.name} needs {need} bytes, "
                             f"raw_data holds {len(tensor.raw_data)}")
        return np.frombuffer(tensor.raw_data, dtype.newbyteorder("<")).astype(dtype).reshape(dims)
    values = getattr(tensor, _TYPED_FIELD[tensor.data_type])
    if len(values) != count:
        raise ValueError(f"{what}: shape {dims} needs {count} values, the tensor holds {len(values)}")
    if tensor.data_type == TensorProto.FLOAT16:
        return np.array(values, np.uint16).view(np.float16).reshape(dims)
    return np.array(values).astype(dtype).reshape(dims)


def _read_external(tensor: TensorProto, folder: str | None, need: int, what: str) -> bytes:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location")
    if not location:
        raise ValueError(f"{what}: external data without a location")
    if folder is None:
        raise ValueError(f"{what}: stored in external file {location!r}, but the model was not "
                         "loaded from a path (pass the .onnx file's path)")
    base = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(base, location))
    if os.path.isabs(location) or os.path.commonpath([base, path]) != base:
        raise ValueError(f"{what}: external data path {location!r} leaves the model's folder")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ValueError(f"{what}: malformed external data offset/length {info}") from None
    if not os.path.isfile(path):
        raise ValueError(f"{what}: external data file {location!r} not found")
    size = os.path.getsize(path)
    if length is None:
        length = size - offset
    if offset < 0 or length != need or offset + length > size:
        raise ValueError(f"{what}: needs {need} bytes; external data declares offset {offset} "
                         f"length {length} in a file of {size} bytes")
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)

"""``TensorProto`` <-> numpy conversions with TensorFlow's C++ rules.

``Tensor::FromProto`` (requests) accepts typed fields or ``tensor_content``;
a shorter typed list repeats its last value, an empty one means zeros, extra
values are ignored. ``Tensor::AsProtoField`` (TF Serving's default response
encoding) writes typed repeated fields; ``AsProtoTensorContent`` writes
``tensor_content`` (``--enable_serialization_as_tensor_content``).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

DT = types_pb2.DataType

# DataType -> (numpy dtype, TensorProto field holding typed values).
_TYPES: dict[int, tuple[np.dtype, str]] = {
    DT.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    DT.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    DT.DT_INT32: (np.dtype(np.int32), "int_val"),
    DT.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    DT.DT_INT16: (np.dtype(np.int16), "int_val"),
    DT.DT_INT8: (np.dtype(np.int8), "int_val"),
    DT.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    DT.DT_STRING: (np.dtype(object), "string_val"),
    DT.DT_INT64: (np.dtype(np.int64), "int64_val"),
    DT.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    DT.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    DT.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
    DT.DT_HALF: (np.dtype(np.float16), "half_val"),
    DT.DT_BFLOAT16: (np.dtype(ml_dtypes.bfloat16), "half_val"),
    DT.DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val"),
    DT.DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val"),
}
_BY_NUMPY = {np_dtype: dt for dt, (np_dtype, _) in _TYPES.items()}
# A request tensor larger than this is refused instead of allocated.
MAX_TENSOR_BYTES = 2**31


def dtype_name(dtype: int) -> str:
    """``DataTypeString``: ``DT_FLOAT`` -> ``float``, ``DT_STRING`` -> ``string``."""
    try:
        return DT.Name(dtype)[3:].lower()
    except ValueError:
        return f"unknown dtype enum ({dtype})"


def numpy_dtype(dtype: int) -> np.dtype:
    return _TYPES[dtype][0]


def is_supported(dtype: int) -> bool:
    return dtype in _TYPES


def dtype_of(array: np.ndarray) -> int:
    """The DataType of a numpy array (object arrays hold strings)."""
    if array.dtype.kind in "SUO":
        return DT.DT_STRING
    return _BY_NUMPY.get(array.dtype, DT.DT_INVALID)


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """``Tensor::FromProto``; raises ``ValueError`` where TensorFlow's returns false."""
    if proto.dtype not in _TYPES:
        raise ValueError(f"unsupported dtype {dtype_name(proto.dtype)}")
    np_dtype, field = _TYPES[proto.dtype]
    if proto.tensor_shape.unknown_rank:
        raise ValueError("unknown rank")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if len(shape) > 254 or any(size < 0 for size in shape):
        raise ValueError("invalid shape")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count * max(np_dtype.itemsize, 1) > MAX_TENSOR_BYTES:
        raise ValueError("tensor too large")
    if proto.tensor_content:
        if proto.dtype == DT.DT_STRING:
            raise ValueError("string tensors cannot use tensor_content")
        if len(proto.tensor_content) != count * np_dtype.itemsize:
            raise ValueError("tensor_content size does not match the shape")
        return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).copy()
    values = getattr(proto, field)
    if proto.dtype == DT.DT_STRING:
        flat = np.empty(count, dtype=object)
        if count:
            items = list(values[:count]) or [b""]
            flat[: len(items)] = items
            flat[len(items) :] = items[-1]
        return flat.reshape(shape)
    if proto.dtype in (DT.DT_HALF, DT.DT_BFLOAT16):
        raw = np.array(values, dtype=np.int64).astype(np.uint16).view(np_dtype)
    elif proto.dtype in (DT.DT_COMPLEX64, DT.DT_COMPLEX128):
        parts = np.array(values, dtype=np.float64)
        raw = (parts[0::2] + 1j * parts[1 : 2 * (len(parts) // 2) : 2]).astype(np_dtype)
    elif np_dtype.kind in "iu" and field == "int_val":
        raw = np.array(values, dtype=np.int64).astype(np_dtype)
    else:
        raw = np.array(values, dtype=np_dtype)
    if raw.size == 0:
        flat = np.zeros(count, dtype=np_dtype)
    elif raw.size >= count:
        flat = raw[:count]
    else:
        flat = np.concatenate([raw, np.full(count - raw.size, raw[-1], dtype=np_dtype)])
    return flat.reshape(shape)


def to_proto(array: np.ndarray, as_tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """``Tensor::AsProtoField`` (or ``AsProtoTensorContent``) of a session output."""
    array = np.asarray(array)
    dtype = dtype_of(array)
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
        )
    )
    if dtype not in _TYPES:
        raise ValueError(f"cannot encode a {array.dtype} tensor")
    flat = array.ravel()
    if as_tensor_content and dtype != DT.DT_STRING:
        proto.tensor_content = np.ascontiguousarray(flat).tobytes()
        return proto
    field = _TYPES[dtype][1]
    if dtype == DT.DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif dtype in (DT.DT_HALF, DT.DT_BFLOAT16):
        proto.half_val.extend(flat.view(np.uint16).astype(np.int32).tolist())
    elif dtype in (DT.DT_COMPLEX64, DT.DT_COMPLEX128):
        pairs = np.stack([flat.real, flat.imag], axis=-1).ravel()
        getattr(proto, field).extend(pairs.tolist())
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto

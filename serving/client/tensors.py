"""``TensorProto`` <-> numpy for the gRPC client, without TensorFlow.

The protos come from :mod:`serving.protos` (TF Serving's messages, TensorFlow not
imported). The functions read any ``TensorProto`` class, TensorFlow's included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serving.protos import DataType, TensorProto, TensorShapeProto

# dtype -> (numpy dtype, typed repeated field). Field choice follows TF's
# Tensor::AsProtoField / FromProto (tensor.cc): small ints share int_val, half/bfloat16
# travel as their 16-bit patterns in half_val.
_DTYPES: dict[int, tuple[np.dtype, str]] = {
    DataType.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    DataType.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    DataType.DT_INT32: (np.dtype(np.int32), "int_val"),
    DataType.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    DataType.DT_INT16: (np.dtype(np.int16), "int_val"),
    DataType.DT_INT8: (np.dtype(np.int8), "int_val"),
    DataType.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    DataType.DT_INT64: (np.dtype(np.int64), "int64_val"),
    DataType.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    DataType.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
    DataType.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    DataType.DT_HALF: (np.dtype(np.float16), "half_val"),
}


def string_tensor(values: Sequence[bytes]) -> TensorProto:
    """A 1-D DT_STRING tensor, as ``tf.make_tensor_proto(values, tf.string)`` makes it."""
    shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=len(values))])
    return TensorProto(dtype=DataType.DT_STRING, tensor_shape=shape, string_val=values)


def to_numpy(proto: TensorProto) -> np.ndarray:
    """The value of a ``TensorProto``: typed fields or ``tensor_content``, like ``tf.make_ndarray``.

    Strings come back as an object array of ``bytes``.
    """
    shape = [] if proto.tensor_shape.unknown_rank else [d.size for d in proto.tensor_shape.dim]
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if proto.dtype == DataType.DT_STRING:
        values = list(proto.string_val)
        array = np.empty(count, dtype=object)
        array[:] = _fill(values, count, b"")
        return array.reshape(shape)
    if proto.dtype == DataType.DT_BFLOAT16:
        # bfloat16 is the top half of a float32: widen the bit patterns.
        bits = _raw_or_typed(proto, np.dtype("<u2"), "half_val", count).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if proto.dtype not in _DTYPES:
        name = DataType.Name(proto.dtype) if proto.dtype else "DT_INVALID"
        raise TypeError(f"cannot convert a {name} tensor to numpy")
    dtype, field = _DTYPES[proto.dtype]
    if proto.dtype == DataType.DT_HALF:
        bits = _raw_or_typed(proto, np.dtype("<u2"), field, count)
        return bits.view(np.float16).reshape(shape)
    return _raw_or_typed(proto, dtype, field, count).reshape(shape)


def _raw_or_typed(proto: TensorProto, dtype: np.dtype, field: str, count: int) -> np.ndarray:
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype)
    values = list(getattr(proto, field))
    return np.asarray(_fill(values, count, 0), dtype=dtype)


def _fill(values: list, count: int, zero: object) -> list:
    """TF's FromProto rule: a shorter list repeats its last value; an empty one means zeros."""
    if len(values) >= count:
        return values[:count]
    pad = values[-1] if values else zero
    return values + [pad] * (count - len(values))

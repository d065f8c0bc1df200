"""One ``TensorProto`` <-> numpy codec for the server and the client, with no TensorFlow ops.

The rules are TensorFlow's C++ ones (``tensor.cc``):

* ``Tensor::FromProto`` (:func:`to_numpy`) reads typed fields or
  ``tensor_content``; a shorter typed list repeats its last value, an empty
  one means zeros, extra values are ignored.
* ``Tensor::AsProtoField`` (:func:`from_numpy`) writes typed repeated fields;
  ``AsProtoTensorContent`` (``as_tensor_content=True``) writes raw bytes.

A proto is sized before anything is allocated: :func:`tensor_nbytes` computes
what the decoded array will take from the shape and dtype alone (so a 38-byte
proto claiming 67 million strings is caught before the first one is copied),
and :func:`to_numpy` refuses a tensor over ``max_bytes`` with
:class:`TensorTooLarge`.

The protos are reached through :func:`protos` only: :mod:`serving.protos`, TF
Serving's messages without ``tensorflow/__init__``. Reading works on any
``TensorProto`` class; writing fills ``out`` when given (TensorFlow's class too).

>>> import numpy as np
>>> proto = from_numpy(np.array([[1.5, 2.0]], np.float32))
>>> to_numpy(proto).tolist()
[[1.5, 2.0]]
>>> tensor_nbytes(proto.dtype, [536870912])
2147483648
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serving import protos as messages


def protos():
    """The one place the protos are imported: :mod:`serving.protos` (no TensorFlow).

    Its ``TensorProto`` is not TensorFlow's class: a caller that fills a message of
    ``tensorflow-serving-api`` (the server) passes it as ``out=``.
    """

    return messages


# DataType enum numbers (types.proto); fixed by the wire format.
DT_INVALID, DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = range(8)
DT_COMPLEX64, DT_INT64, DT_BOOL = 8, 9, 10
DT_BFLOAT16, DT_UINT16, DT_COMPLEX128, DT_HALF = 14, 17, 18, 19
DT_UINT32, DT_UINT64 = 22, 23

_NAMES = {
    DT_FLOAT: "float", DT_DOUBLE: "double", DT_INT32: "int32", DT_UINT8: "uint8",
    DT_INT16: "int16", DT_INT8: "int8", DT_STRING: "string", DT_COMPLEX64: "complex64",
    DT_INT64: "int64", DT_BOOL: "bool", DT_BFLOAT16: "bfloat16", DT_UINT16: "uint16",
    DT_COMPLEX128: "complex128", DT_HALF: "half", DT_UINT32: "uint32", DT_UINT64: "uint64",
}  # fmt: skip


def _bfloat16() -> np.dtype:
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


# DataType -> (numpy dtype, TensorProto field holding typed values). Small ints share
# int_val; half and bfloat16 travel as their 16-bit patterns in half_val.
_TYPES: dict[int, tuple[np.dtype, str]] = {
    DT_FLOAT: (np.dtype(np.float32), "float_val"),
    DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    DT_INT32: (np.dtype(np.int32), "int_val"),
    DT_UINT8: (np.dtype(np.uint8), "int_val"),
    DT_INT16: (np.dtype(np.int16), "int_val"),
    DT_INT8: (np.dtype(np.int8), "int_val"),
    DT_UINT16: (np.dtype(np.uint16), "int_val"),
    DT_STRING: (np.dtype(object), "string_val"),
    DT_INT64: (np.dtype(np.int64), "int64_val"),
    DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
    DT_HALF: (np.dtype(np.float16), "half_val"),
    DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val"),
    DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val"),
}
# What one string element costs once decoded, besides its bytes: a pointer in the object
# array, TensorFlow's tstring when it is fed, and a bytes object header.
STRING_OVERHEAD = 8 + 24 + 33
MAX_RANK = 254  # TensorShape::kMaxDims


class TensorError(ValueError):
    """The proto cannot be decoded (TensorFlow's ``FromProto`` returns false)."""


class TensorTooLarge(TensorError):
    """The decoded tensor would take more than the allowed bytes."""

    def __init__(self, message: str, nbytes: int, limit: int) -> None:
        super().__init__(message)
        self.nbytes = nbytes
        self.limit = limit


def dtype_name(dtype: int) -> str:
    """``DataTypeString``: ``DT_FLOAT`` -> ``float``."""
    return _NAMES.get(dtype, f"unknown dtype enum ({dtype})")


def enum_name(dtype: int) -> str:
    """The ``DataType`` enum name: ``DT_FLOAT``."""
    return "DT_" + dtype_name(dtype).upper() if dtype in _NAMES else "DT_INVALID"


def is_supported(dtype: int) -> bool:
    return dtype in _TYPES


def numpy_dtype(dtype: int) -> np.dtype:
    if dtype == DT_BFLOAT16:
        return _bfloat16()
    return _TYPES[dtype][0]


def dtype_of(array: np.ndarray) -> int:
    """The DataType of a numpy array (object, bytes and str arrays hold strings)."""
    if array.dtype.kind in "SUO":
        return DT_STRING
    for dtype, (np_dtype, _) in _TYPES.items():
        if np_dtype == array.dtype:
            return dtype
    if array.dtype.name == "bfloat16":
        return DT_BFLOAT16
    return DT_INVALID


def shape_of(proto) -> list[int]:
    """The proto's shape; raises :class:`TensorError` for a shape TensorFlow rejects."""
    if proto.tensor_shape.unknown_rank:
        raise TensorError("the shape has unknown rank")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if len(shape) > MAX_RANK:
        raise TensorError(f"rank {len(shape)} is more than {MAX_RANK}")
    if any(size < 0 for size in shape):
        raise TensorError(f"shape {format_shape(shape)} has a negative size")
    # Even with a zero dimension, the others must multiply within int64 bytes (numpy
    # refuses larger shapes; 16 bytes is the widest item).
    if num_elements(size for size in shape if size) >= 2**63 // 16:
        raise TensorError(f"shape {format_shape(shape)} has too many elements")
    return shape


def format_shape(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(size) for size in shape) + "]"


def num_elements(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)  # Python ints: no overflow
    return count


def tensor_nbytes(dtype: int, shape: Sequence[int], string_bytes: int = 0) -> int:
    """Bytes the decoded array takes: elements x item size (strings: overhead + their bytes)."""
    count = num_elements(shape)
    if dtype == DT_STRING:
        return count * STRING_OVERHEAD + string_bytes
    itemsize = 2 if dtype == DT_BFLOAT16 else _TYPES[dtype][0].itemsize
    return count * itemsize


def proto_nbytes(proto) -> int:
    """:func:`tensor_nbytes` of a proto, counting repeated last strings as TF copies them."""
    if proto.dtype not in _TYPES and proto.dtype != DT_BFLOAT16:
        raise TensorError(f"unsupported dtype {dtype_name(proto.dtype)}")
    shape = shape_of(proto)
    string_bytes = 0
    if proto.dtype == DT_STRING:
        count = num_elements(shape)
        values = proto.string_val
        given = min(len(values), count)
        string_bytes = sum(len(values[i]) for i in range(given))
        if given and count > given:
            string_bytes += (count - given) * len(values[given - 1])
    return tensor_nbytes(proto.dtype, shape, string_bytes)


def to_numpy(proto, max_bytes: int | None = None, name: str = "tensor") -> np.ndarray:
    """``Tensor::FromProto``; sized first, then decoded.

    Raises :class:`TensorTooLarge` when the result would exceed ``max_bytes`` and
    :class:`TensorError` where TensorFlow's ``FromProto`` fails. Strings come back as
    an object array of ``bytes``.
    """
    nbytes = proto_nbytes(proto)
    shape = shape_of(proto)
    if max_bytes is not None and nbytes > max_bytes:
        raise TensorTooLarge(
            f"{name}: a {dtype_name(proto.dtype)} tensor of shape {format_shape(shape)} "
            f"takes {nbytes} bytes, more than the {max_bytes} bytes allowed",
            nbytes,
            max_bytes,
        )
    count = num_elements(shape)
    np_dtype = numpy_dtype(proto.dtype)
    if proto.tensor_content:
        if proto.dtype == DT_STRING:
            raise TensorError("string tensors cannot use tensor_content")
        if len(proto.tensor_content) != count * np_dtype.itemsize:
            raise TensorError(
                f"tensor_content holds {len(proto.tensor_content)} bytes, the shape "
                f"{format_shape(shape)} needs {count * np_dtype.itemsize}"
            )
        if proto.dtype in (DT_HALF, DT_BFLOAT16):
            bits = np.frombuffer(proto.tensor_content, dtype="<u2").astype(np.uint16)
            return bits.view(np_dtype).reshape(shape)
        little = np_dtype.newbyteorder("<")
        return np.frombuffer(proto.tensor_content, dtype=little).astype(np_dtype).reshape(shape)
    field = "half_val" if proto.dtype == DT_BFLOAT16 else _TYPES[proto.dtype][1]
    values = getattr(proto, field)
    if proto.dtype == DT_STRING:
        flat = np.empty(count, dtype=object)
        if count:
            given = list(values[:count]) or [b""]
            flat[: len(given)] = given
            flat[len(given) :] = given[-1]
        return flat.reshape(shape)
    if proto.dtype in (DT_COMPLEX64, DT_COMPLEX128):
        parts = np.array(values[: 2 * count], dtype=np.float64)
        raw = (parts[0::2] + 1j * parts[1 : 2 * (len(parts) // 2) : 2]).astype(np_dtype)
    elif proto.dtype in (DT_HALF, DT_BFLOAT16):
        raw = np.array(values[:count], dtype=np.int64).astype(np.uint16).view(np_dtype)
    elif field == "int_val":
        raw = np.array(values[:count], dtype=np.int64).astype(np_dtype)
    else:
        raw = np.array(values[:count], dtype=np_dtype)
    if raw.size == count:
        return raw.reshape(shape)
    flat = np.empty(count, dtype=np_dtype)  # sized above: within max_bytes
    flat[: raw.size] = raw
    flat[raw.size :] = raw[-1] if raw.size else 0
    return flat.reshape(shape)


def from_numpy(array, as_tensor_content: bool = False, out=None):
    """``Tensor::AsProtoField`` (or ``AsProtoTensorContent``) of an array.

    Fills ``out`` (an empty ``TensorProto`` of any class, e.g. ``response.outputs[name]``)
    or a new :mod:`serving.protos` ``TensorProto``, and returns it.
    Raises :class:`TensorError` for dtypes a TensorProto cannot hold.
    """
    array = np.asarray(array)
    dtype = dtype_of(array)
    if dtype == DT_INVALID:
        raise TensorError(f"cannot encode a {array.dtype} tensor")
    proto = protos().TensorProto() if out is None else out
    proto.dtype = dtype
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = array.ravel()
    if dtype == DT_STRING:
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape") for v in flat
        )
        return proto
    if as_tensor_content:
        if dtype in (DT_HALF, DT_BFLOAT16):
            flat = flat.view(np.uint16)
        proto.tensor_content = flat.astype(flat.dtype.newbyteorder("<")).tobytes()
        return proto
    if dtype in (DT_HALF, DT_BFLOAT16):
        proto.half_val.extend(flat.view(np.uint16).astype(np.int32).tolist())
    elif dtype in (DT_COMPLEX64, DT_COMPLEX128):
        pairs = np.stack([flat.real, flat.imag], axis=-1).ravel()
        getattr(proto, _TYPES[dtype][1]).extend(pairs.tolist())
    else:
        getattr(proto, _TYPES[dtype][1]).extend(flat.tolist())
    return proto


def string_tensor(values: Sequence[bytes], out=None):
    """A 1-D DT_STRING tensor, as ``tf.make_tensor_proto(values, tf.string)`` makes it.

    ``out`` as in :func:`from_numpy`.
    """
    proto = protos().TensorProto() if out is None else out
    proto.dtype = DT_STRING
    proto.tensor_shape.dim.add(size=len(values))
    proto.string_val.extend(values)
    return proto

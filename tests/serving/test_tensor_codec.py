"""The shared TensorProto codec against TensorFlow's own ``make_tensor_proto``/``make_ndarray``."""

from __future__ import annotations

import numpy as np
import pytest

from serving import tensor_codec
from serving.tensor_codec import TensorError, TensorTooLarge

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize(
    "value",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1.5, -2.25], np.float64),
        np.array([[1, -2], [3, 4]], np.int32),
        np.array([0, 255], np.uint8),
        np.array([-5, 7], np.int8),
        np.array([2**40, -1], np.int64),
        np.array([True, False]),
        np.array([2**32 - 1], np.uint32),
        np.array([2**64 - 1], np.uint64),
        np.array([0.5, -1.0], np.float16),
        np.array([1 + 2j, 3 - 4j], np.complex64),
        np.array(7.0, np.float32),
    ],
)
def test_round_trip_equals_tensorflow(value):
    for content in (False, True):
        proto = tensor_codec.from_numpy(value, as_tensor_content=content)
        np.testing.assert_array_equal(tf.make_ndarray(proto), value)
        # The server fills TensorFlow's own message (a PredictResponse's outputs) in place.
        theirs = tensor_codec.from_numpy(value, content, out=tf.make_tensor_proto(0).__class__())
        assert theirs.SerializeToString() == proto.SerializeToString()
        np.testing.assert_array_equal(tensor_codec.to_numpy(proto), value)
    packed = tf.make_tensor_proto(value)  # numbers as tensor_content
    decoded = tensor_codec.to_numpy(packed)
    assert decoded.dtype == value.dtype
    np.testing.assert_array_equal(decoded, value)


def test_strings_equal_make_tensor_proto():
    values = [b"a", b"\xff\x00", b""]
    reference = tf.make_tensor_proto(values, dtype=tf.string)
    # serving.protos' TensorProto is not TensorFlow's class: compare the wire bytes.
    assert tensor_codec.string_tensor(values).SerializeToString() == reference.SerializeToString()
    decoded = tensor_codec.to_numpy(tf.make_tensor_proto(values, dtype=tf.string))
    assert decoded.tolist() == values


def test_short_lists_repeat_the_last_value_as_tensorflow_does():
    proto = tf.make_tensor_proto(7.0, dtype=tf.float32, shape=[2, 2])
    np.testing.assert_array_equal(tensor_codec.to_numpy(proto), tf.make_ndarray(proto))
    empty = tf.make_tensor_proto([], dtype=tf.int32, shape=[0])
    empty.tensor_shape.dim[0].size = 3
    assert tensor_codec.to_numpy(empty).tolist() == [0, 0, 0]


def test_sized_before_allocation():
    # 38 bytes on the wire, 67 million strings once decoded: refused without allocating.
    proto = tf.make_tensor_proto([b"x"], dtype=tf.string)
    proto.tensor_shape.dim[0].size = 67108864
    assert len(proto.SerializeToString()) < 40
    with pytest.raises(TensorTooLarge) as raised:
        tensor_codec.to_numpy(proto, max_bytes=64 << 20, name="image_bytes")
    assert raised.value.nbytes == 67108864 * (tensor_codec.STRING_OVERHEAD + 1)
    assert "image_bytes" in str(raised.value) and "[67108864]" in str(raised.value)
    floats = tf.make_tensor_proto([1.0], dtype=tf.float32)
    floats.tensor_shape.dim[0].size = 536870912
    assert tensor_codec.proto_nbytes(floats) == 2**31
    with pytest.raises(TensorTooLarge):
        tensor_codec.to_numpy(floats, max_bytes=2**30)


def test_bad_protos_are_errors():
    proto = tf.make_tensor_proto(np.zeros(4, np.float32))
    proto.tensor_content = proto.tensor_content[:-1]
    with pytest.raises(TensorError, match="tensor_content"):
        tensor_codec.to_numpy(proto)
    proto = tf.make_tensor_proto(np.zeros(4, np.float32))
    proto.tensor_shape.dim[0].size = -2
    with pytest.raises(TensorError, match="negative"):
        tensor_codec.to_numpy(proto)
    proto.tensor_shape.dim[0].size = 0  # zero elements, but the other sizes overflow
    proto.tensor_shape.dim.add(size=2**40)
    proto.tensor_shape.dim.add(size=2**40)
    with pytest.raises(TensorError, match="too many elements"):
        tensor_codec.to_numpy(proto)
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(TensorError):
        tensor_codec.to_numpy(proto)
    with pytest.raises(TensorError):
        tensor_codec.from_numpy(np.array([1], dtype="datetime64[s]"))

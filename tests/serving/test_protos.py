"""``serving.protos`` agrees with TensorFlow's and tensorflow-serving-api's own descriptors."""

from __future__ import annotations

import importlib.util

import pytest
from google.protobuf.descriptor import FieldDescriptor

from serving import protos


def _reference_pool():
    """The default pool, after importing the upstream modules that define our messages."""
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is the reference")
    from google.protobuf import descriptor_pool
    from tensorflow.core.framework import types_pb2  # noqa: F401
    from tensorflow_serving.apis import (  # noqa: F401
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2,
        predict_pb2,
        prediction_service_pb2,
    )

    return descriptor_pool.Default()


def _ours(kind: str) -> list:
    """Every message or enum that our own .proto files define (nested ones included)."""
    found = []

    def walk(message):
        found.append(message) if kind == "message" else found.extend(message.enum_types)
        for nested in message.nested_types:
            if not nested.GetOptions().map_entry:
                walk(nested)

    for name in ("tensorflow.proto", "error_codes.proto", "tensorflow_serving.proto"):
        file = protos.POOL.FindFileByName(name)
        if kind == "enum":
            found.extend(file.enum_types_by_name.values())
        for message in file.message_types_by_name.values():
            walk(message)
    return found


def _type_of(field: FieldDescriptor) -> tuple:
    target = field.message_type or field.enum_type
    return (field.type, target.full_name if target else None, field.is_repeated)


def test_every_field_matches_upstream():
    reference = _reference_pool()
    messages = _ours("message")
    assert len(messages) >= 25
    for ours in messages:
        theirs = reference.FindMessageTypeByName(ours.full_name)
        for field in ours.fields:
            assert field.name in theirs.fields_by_name, f"{ours.full_name}.{field.name}"
            upstream = theirs.fields_by_name[field.name]
            where = f"{ours.full_name}.{field.name}"
            assert field.number == upstream.number, where
            assert _type_of(field) == _type_of(upstream), where
            if field.message_type and field.message_type.GetOptions().map_entry:
                key, value = (field.message_type.fields_by_name[n] for n in ("key", "value"))
                their_entry = upstream.message_type.fields_by_name
                assert _type_of(key) == _type_of(their_entry["key"]), where
                assert _type_of(value) == _type_of(their_entry["value"]), where
            oneof = field.containing_oneof.name if field.containing_oneof else None
            their_oneof = upstream.containing_oneof.name if upstream.containing_oneof else None
            assert oneof == their_oneof, where


def test_every_enum_value_matches_upstream():
    reference = _reference_pool()
    for ours in _ours("enum"):
        theirs = reference.FindEnumTypeByName(ours.full_name)
        upstream = {value.name: value.number for value in theirs.values}
        for value in ours.values:
            assert upstream.get(value.name) == value.number, f"{ours.full_name}.{value.name}"
    # Only the graph-internal reference types are left out of DataType.
    ours = {v.name for v in protos.POOL.FindEnumTypeByName("tensorflow.DataType").values}
    theirs = {v.name for v in reference.FindEnumTypeByName("tensorflow.DataType").values}
    assert all(name.endswith("_REF") for name in theirs - ours)


def test_methods_are_tf_servings():
    reference = _reference_pool()
    for service in ("PredictionService", "ModelService"):
        ours = protos.POOL.FindServiceByName(f"tensorflow.serving.{service}")
        theirs = reference.FindServiceByName(f"tensorflow.serving.{service}")
        for method in ours.methods:
            upstream = theirs.methods_by_name[method.name]
            assert method.input_type.full_name == upstream.input_type.full_name
            assert method.output_type.full_name == upstream.output_type.full_name
            assert protos.method_path(service, method.name) == f"/{theirs.full_name}/{method.name}"


def test_messages_cross_the_wire_both_ways():
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is the reference")
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    theirs = predict_pb2.PredictRequest()
    theirs.model_spec.name = "vit"
    theirs.model_spec.version.value = 3
    theirs.inputs["x"].CopyFrom(tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3)))
    ours = protos.PredictRequest.FromString(theirs.SerializeToString())
    assert ours.model_spec.version.value == 3
    assert ours.inputs["x"].tensor_shape.dim[1].size == 3
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )


def test_descriptor_set_is_compiled_from_the_proto_files():
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools (a development requirement) is needed to run protoc")
    from serving.protos import build

    assert build.main(["--check"]) == 0, "run: python -m serving.protos.build"

"""TF Serving's gRPC messages and method paths, without importing TensorFlow.

``tensorflow-serving-api``'s ``*_pb2`` modules import ``tensorflow.core...``, and
importing anything under ``tensorflow`` runs ``tensorflow/__init__`` (seconds and
hundreds of MB). The messages a client needs are written in the ``.proto`` files
of this folder, with upstream's packages, names and field numbers, so they are
the same on the wire. ``build.py`` compiles them into ``descriptor_set.py``.

They live in a private :class:`~google.protobuf.descriptor_pool.DescriptorPool`:
the message classes here are not TensorFlow's classes (``CopyFrom`` between the
two fails; serialize and parse instead), and both can be loaded in one process
without a "duplicate symbol" conflict.

>>> from serving.protos import DataType, PredictRequest
>>> request = PredictRequest()
>>> request.model_spec.name = "vit"
>>> request.inputs["image_bytes"].dtype = DataType.Value("DT_STRING")
>>> PredictRequest.FromString(request.SerializeToString()).inputs["image_bytes"].dtype
7
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal import enum_type_wrapper

from serving.protos.descriptor_set import FILE_DESCRIPTOR_SET

POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(FILE_DESCRIPTOR_SET).file:
    POOL.Add(_file)


def message_class(full_name: str) -> type:
    """The message class of ``full_name`` (``"tensorflow.TensorProto"``) in this pool."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


def enum(full_name: str) -> enum_type_wrapper.EnumTypeWrapper:
    """``Name()``/``Value()`` access to an enum of this pool, like a ``*_pb2`` module's."""
    return enum_type_wrapper.EnumTypeWrapper(POOL.FindEnumTypeByName(full_name))


# tensorflow.proto
DataType = enum("tensorflow.DataType")
TensorShapeProto = message_class("tensorflow.TensorShapeProto")
TensorProto = message_class("tensorflow.TensorProto")
BytesList = message_class("tensorflow.BytesList")
Feature = message_class("tensorflow.Feature")
Features = message_class("tensorflow.Features")
Example = message_class("tensorflow.Example")
SignatureDef = message_class("tensorflow.SignatureDef")
# error_codes.proto
ErrorCode = enum("tensorflow.error.Code")
# tensorflow_serving.proto
ModelSpec = message_class("tensorflow.serving.ModelSpec")
PredictRequest = message_class("tensorflow.serving.PredictRequest")
PredictResponse = message_class("tensorflow.serving.PredictResponse")
ClassificationRequest = message_class("tensorflow.serving.ClassificationRequest")
ClassificationResponse = message_class("tensorflow.serving.ClassificationResponse")
SignatureDefMap = message_class("tensorflow.serving.SignatureDefMap")
GetModelMetadataRequest = message_class("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse = message_class("tensorflow.serving.GetModelMetadataResponse")
GetModelStatusRequest = message_class("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse = message_class("tensorflow.serving.GetModelStatusResponse")
ModelVersionState = enum("tensorflow.serving.ModelVersionStatus.State")


def method_path(service: str, method: str) -> str:
    """The gRPC path of a method, ``/tensorflow.serving.PredictionService/Predict``."""
    found = POOL.FindServiceByName(f"tensorflow.serving.{service}").FindMethodByName(method)
    if found is None:
        raise KeyError(f"tensorflow.serving.{service} has no method {method}")
    return f"/{found.containing_service.full_name}/{found.name}"

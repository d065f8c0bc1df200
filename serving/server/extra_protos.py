"""Protobuf messages TF Serving reads from flag files but ``tensorflow-serving-api`` lacks.

The pip package ships the API and model-config protos, not
``session_bundle_config.proto`` (``BatchingParameters``) nor
``monitoring_config.proto`` (``MonitoringConfig``). Both are rebuilt here from
their field lists, in a private descriptor pool, so the flag files are parsed by
the real protobuf text-format parser with TF Serving's field names and types.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto
_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)


def _field(message, name, number, kind, type_name=None, repeated=False):
    field = message.field.add(name=name, number=number, type=kind)
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        field.type_name = type_name


def _build() -> None:
    batching = descriptor_pb2.FileDescriptorProto(
        name="keras_vit_serving/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    params = batching.message_type.add(name="BatchingParameters")
    int64 = ".google.protobuf.Int64Value"
    _field(params, "max_batch_size", 1, _F.TYPE_MESSAGE, int64)
    _field(params, "batch_timeout_micros", 2, _F.TYPE_MESSAGE, int64)
    _field(params, "max_enqueued_batches", 3, _F.TYPE_MESSAGE, int64)
    _field(params, "num_batch_threads", 4, _F.TYPE_MESSAGE, int64)
    _field(params, "thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue")
    _field(params, "allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True)
    _field(params, "pad_variable_length_inputs", 7, _F.TYPE_BOOL)
    _field(params, "enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, ".google.protobuf.BoolValue")
    _field(params, "max_execution_batch_size", 9, _F.TYPE_MESSAGE, int64)
    _POOL.Add(batching)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="keras_vit_serving/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    prometheus = monitoring.message_type.add(name="PrometheusConfig")
    _field(prometheus, "enable", 1, _F.TYPE_BOOL)
    _field(prometheus, "path", 2, _F.TYPE_STRING)
    config = monitoring.message_type.add(name="MonitoringConfig")
    _field(config, "prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    _POOL.Add(monitoring)


_build()

BatchingParameters = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
)
MonitoringConfig = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
)

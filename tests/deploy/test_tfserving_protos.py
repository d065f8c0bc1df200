"""Our hand-declared TF Serving config messages have TF Serving's field names, numbers, types.

tensorflow-serving-api ships neither ``BatchingParameters``
(``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``) nor
``MonitoringConfig`` (``tensorflow_serving/config/monitoring_config.proto``), so
two places declare them by hand: ``serving/server/extra_protos.py`` (our
server's flag files) and ``deploy_helpers.build_missing_protos`` (the deployment
tests' parsers). A config test that writes ``max_batchsize`` against a declaration
that also says ``max_batchsize`` would pass; here both declarations are compared
with TF Serving's definitions as listed in shared/docs/tfserving-protocol.md
(sections 3.4 and 3.5), quoted below.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import descriptor, text_format

from serving.server import extra_protos
from tests.deploy.deploy_helpers import build_missing_protos

DOC = Path(__file__).resolve().parents[3] / "shared" / "docs" / "tfserving-protocol.md"
# Quoted from the doc (TF Serving's proto field lists), nothing added.
BATCHING_PARAMETERS = (
    "`Int64Value max_batch_size = 1; Int64Value batch_timeout_micros = 2; "
    "Int64Value max_enqueued_batches = 3; Int64Value num_batch_threads = 4; "
    "StringValue thread_pool_name = 5; repeated int64 allowed_batch_sizes = 6; "
    "bool pad_variable_length_inputs = 7; BoolValue enable_large_batch_splitting = 8; "
    "Int64Value max_execution_batch_size = 9;`"
)
MONITORING_CONFIG = (
    "`MonitoringConfig { PrometheusConfig prometheus_config = 1 "
    "{ bool enable = 1; string path = 2; } }`"
)

_SCALARS = {
    "bool": descriptor.FieldDescriptor.TYPE_BOOL,
    "string": descriptor.FieldDescriptor.TYPE_STRING,
    "int64": descriptor.FieldDescriptor.TYPE_INT64,
}


def _fields(text: str) -> dict[str, tuple]:
    """``[repeated] TYPE name = N;`` -> {name: (number, type, message type, repeated)}."""
    out = {}
    for repeated, kind, name, number in re.findall(
        r"(repeated )?(\w+) (\w+) = (\d+)", text.replace("{", ";")
    ):
        if kind in _SCALARS:
            out[name] = (int(number), _SCALARS[kind], None, bool(repeated))
        else:
            full = (
                f"google.protobuf.{kind}"
                if kind.endswith("Value")
                else f"tensorflow.serving.{kind}"
            )
            out[name] = (int(number), descriptor.FieldDescriptor.TYPE_MESSAGE, full, bool(repeated))
    return out


def _declared(message_descriptor) -> dict[str, tuple]:
    return {
        f.name: (
            f.number,
            f.type,
            f.message_type.full_name if f.message_type else None,
            f.label == descriptor.FieldDescriptor.LABEL_REPEATED,
        )
        for f in message_descriptor.fields
    }


def test_the_quotes_are_the_docs_words():
    if not DOC.is_file():
        pytest.skip(f"{DOC} is not beside this checkout (it is in CI and in the main tree)")
    text = DOC.read_text()
    assert BATCHING_PARAMETERS in text
    assert MONITORING_CONFIG in text


def test_the_quotes_parse_to_every_field():
    assert sorted(n for n, *_ in _fields(BATCHING_PARAMETERS).values()) == list(range(1, 10))
    assert set(_fields(MONITORING_CONFIG)) == {"prometheus_config", "enable", "path"}


DECLARATIONS = {
    "serving/server/extra_protos.py": lambda: (
        extra_protos.MonitoringConfig,
        extra_protos.BatchingParameters,
    ),
    "deploy_helpers.build_missing_protos": build_missing_protos,
}


@pytest.mark.parametrize("where", DECLARATIONS)
def test_declared_fields_are_tf_servings(where):
    monitoring, batching = DECLARATIONS[where]()
    assert batching.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert _declared(batching.DESCRIPTOR) == _fields(BATCHING_PARAMETERS)
    assert monitoring.DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"
    expected = _fields(MONITORING_CONFIG)
    assert _declared(monitoring.DESCRIPTOR) == {"prometheus_config": expected["prometheus_config"]}
    prometheus = monitoring.DESCRIPTOR.fields_by_name["prometheus_config"].message_type
    assert _declared(prometheus) == {k: expected[k] for k in ("enable", "path")}


@pytest.mark.parametrize("where", DECLARATIONS)
def test_tf_servings_example_files_parse_and_a_misspelling_does_not(where):
    monitoring, batching = DECLARATIONS[where]()
    # TF Serving's testdata/monitoring_config.txt, as quoted in the doc.
    config = text_format.Parse(
        'prometheus_config: { enable: true, path: "/monitoring/prometheus/metrics" }',
        monitoring(),
    )
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"
    params = text_format.Parse(
        "max_batch_size { value: 32 } batch_timeout_micros { value: 1000 } "
        "allowed_batch_sizes: 8 allowed_batch_sizes: 32 "
        "enable_large_batch_splitting { value: true }",
        batching(),
    )
    assert params.max_batch_size.value == 32 and list(params.allowed_batch_sizes) == [8, 32]
    # Wire numbers: field 1 (max_batch_size) holds the Int64Value, as TF Serving reads it.
    assert params.SerializeToString().startswith(b"\x0a\x02\x08\x20")
    with pytest.raises(text_format.ParseError, match="max_batchsize"):
        text_format.Parse("max_batchsize { value: 32 }", batching())

"""The Prometheus page (``--monitoring_config_file``), in the format of TF Serving's
``prometheus_exporter.cc`` with the metric names of ``tfserving-protocol.md`` 3.5."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

PATH = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_base_path, run_server):
    config = tmp_path_factory.mktemp("monitoring") / "monitoring.config"
    # TF Serving's testdata/monitoring_config.txt.
    config.write_text(f'prometheus_config: {{ enable: true, path: "{PATH}" }}')
    with run_server(
        model_name="half_plus_two",
        model_base_path=str(half_plus_two_base_path),
        monitoring_config_file=str(config),
    ) as server:
        yield server


def fetch(server, path, data=None):
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def test_page_has_tf_serving_metrics_in_prometheus_text_format(server):
    good = json.dumps({"instances": [1.0]}).encode()
    for _ in range(3):
        assert fetch(server, "/v1/models/half_plus_two:predict", good)[0] == 200
    assert fetch(server, "/v1/models/half_plus_two:predict", b'{"instances": ["x"]}')[0] == 400
    status, headers, page = fetch(server, PATH)
    assert status == 200
    assert headers["Content-Type"] == "text/plain"
    assert page.endswith("\n")
    lines = page.splitlines()
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"} 3' in lines
    assert (
        ':tensorflow:serving:request_count{model_name="half_plus_two",status="INVALID_ARGUMENT"} 1'
        in lines
    )
    for name in (
        "request_latency",
        "runtime_latency",
        "model_warmup_latency",
        "batching_session:queuing_latency",
        "batching:processed_batch_size",
    ):
        assert f"# TYPE :tensorflow:serving:{name} histogram" in lines
    # A histogram: cumulative buckets, the last one +Inf, then _sum and _count.
    labels = 'model_name="half_plus_two",API="predict",entrypoint="REST"'
    buckets = [
        line
        for line in lines
        if line.startswith(f":tensorflow:serving:request_latency_bucket{{{labels}")
    ]
    counts = [int(line.rsplit(" ", 1)[1]) for line in buckets]
    assert len(buckets) == 34 and buckets[-1].endswith('le="+Inf"} 3')
    assert buckets[0].startswith(f':tensorflow:serving:request_latency_bucket{{{labels},le="10"}}')
    assert counts == sorted(counts)
    assert f":tensorflow:serving:request_latency_count{{{labels}}} 3" in lines
    assert any(
        re.match(rf":tensorflow:serving:request_latency_sum\{{{labels}\}} \S+", line)
        for line in lines
    )
    # Metrics appear sorted by their TensorFlow name.
    types = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert types == sorted(types, key=lambda n: n.replace(":", "/"))


def test_query_string_is_refused(server):
    status, headers, body = fetch(server, PATH + "?x=1")
    assert (status, body) == (400, "")
    assert headers["Content-Type"] == "text/plain"


def test_no_page_without_monitoring_config(tf_serving_server):
    _, rest_port = tf_serving_server
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"http://127.0.0.1:{rest_port}{PATH}", timeout=30)
    assert raised.value.code == 404

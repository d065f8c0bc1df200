"""Predict, Classify, Regress, MultiInference and metadata on one loaded servable.

The logic and the error texts of TF Serving's ``predict_util.cc``,
``classifier.cc``, ``regressor.cc``, ``multi_inference.cc`` and
``get_model_metadata_impl.cc``, shared by the gRPC and REST front ends and by
warm-up replay.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    regression_pb2,
)

from serving import tensor_codec
from serving.server import admission, memory
from serving.server.metrics import ServingMetrics
from serving.server.servable import Servable
from serving.server.status import Code, ServingError, invalid_argument

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass
class InferenceContext:
    """What every call needs besides its request: metrics and server-wide switches."""

    metrics: ServingMetrics
    signature_method_name_check: bool = False
    # Bytes the decoded input tensors of one request may take; 0: each servable's own
    # budget (Servable.request_budget, sized to the model).
    max_request_tensor_bytes: int = 0
    # Element and decode-cost limits, the decode bytes shared by all requests in flight.
    costs: admission.CostBudget = field(default_factory=admission.CostBudget)

    def request_budget(self, servable: Servable) -> int:
        return self.max_request_tensor_bytes or servable.request_budget


def _signature_key(name: str) -> str:
    return name or DEFAULT_SIGNATURE


def make_model_spec(
    name: str, signature_name: str | None, version: int | None
) -> model_pb2.ModelSpec:
    """``MakeModelSpec``: the spec echoed in responses (empty signature -> default)."""
    spec = model_pb2.ModelSpec(name=name)
    if signature_name is not None:
        spec.signature_name = _signature_key(signature_name)
    if version is not None:
        spec.version.value = version
    return spec


@contextlib.contextmanager
def _admitted(context: InferenceContext, cost: admission.Cost) -> Iterator[None]:
    """Runs the request within the shared decode budget; big ones give memory back after."""
    with context.costs.hold(cost):
        try:
            yield
        finally:
            # Refused by the model or answered: what the run freed goes back either way.
            if cost.nbytes >= memory.GIVE_BACK_THRESHOLD:
                memory.give_back()


def _string_feeds(signature, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = {info.name: alias for alias, info in signature.inputs.items()}
    return {
        names.get(name, name): value
        for name, value in feeds.items()
        if isinstance(value, np.ndarray) and value.dtype == object
    }


def predict_cost(
    context: InferenceContext, servable: Servable, key: str, signature, feeds: Mapping
) -> admission.Cost:
    """The element count is checked first: counting is free, reading headers is not."""
    inputs = admission.image_inputs_of(servable)
    if inputs is not None and key == admission.PIXELS_SIGNATURE:
        # Images of pixels: each one an element of the model (numbers, not strings).
        names = {info.name: alias for alias, info in signature.inputs.items()}
        arrays = {names.get(n, n): v for n, v in feeds.items() if isinstance(v, np.ndarray)}
        cost = admission.estimate(inputs, key, strings=arrays)
        context.costs.check_elements(cost.elements)
        return cost
    strings = _string_feeds(signature, feeds)
    context.costs.check_elements(sum(int(a.size) for a in strings.values()))
    return admission.estimate(inputs, key, strings=strings)


def examples_cost(
    context: InferenceContext, servable: Servable, key: str, request_input: input_pb2.Input
) -> admission.Cost:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list_with_context":
        examples = request_input.example_list_with_context.examples
    elif kind == "example_list":
        examples = request_input.example_list.examples
    else:
        examples = []
    context.costs.check_elements(len(examples))
    inputs = admission.image_inputs_of(servable)
    images = admission.example_images(examples) if inputs is not None else None
    return admission.estimate(inputs, key, images=images, elements=len(examples))


def _run(
    context: InferenceContext,
    servable: Servable,
    model_name: str,
    api: str,
    feeds: dict[str, np.ndarray],
    fetches: Sequence[str],
    timeout_ms: int | None,
) -> list[np.ndarray]:
    start = time.monotonic()
    outputs = servable.runner(feeds, fetches, timeout_ms)
    context.metrics.runtime_latency.add(
        model_name, api, "TF1", value=(time.monotonic() - start) * 1e6
    )
    return outputs


# ----------------------------------------------------------------------------------------
# Predict.


def predict(
    context: InferenceContext,
    servable: Servable,
    model_name: str,
    signature_name: str,
    inputs: Mapping[str, np.ndarray | tensor_pb2.TensorProto],
    output_filter: Sequence[str] = (),
    timeout_ms: int | None = None,
) -> tuple[str, dict[str, np.ndarray]]:
    """``RunPredict``; returns the resolved signature name and outputs by alias."""
    key = _signature_key(signature_name)
    signature = servable.signature_defs.get(key)
    if signature is None:
        raise ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
    if context.signature_method_name_check and signature.method_name not in (
        PREDICT_METHOD,
        CLASSIFY_METHOD,
        REGRESS_METHOD,
    ):
        raise ServingError(
            Code.INTERNAL,
            "Expected prediction signature method_name to be one of {"
            f"{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
            f"Was: {signature.method_name}",
        )
    _verify_inputs_size(signature, inputs)
    feeds = _input_values(signature, inputs, context.request_budget(servable))
    aliases, fetches = _output_targets(signature, output_filter)
    cost = predict_cost(context, servable, key, signature, feeds)
    with _admitted(context, cost):
        outputs = _run(context, servable, model_name, "Predict", feeds, fetches, timeout_ms)
    return key, dict(zip(aliases, outputs, strict=True))


def _verify_inputs_size(signature: meta_graph_pb2.SignatureDef, inputs: Mapping) -> None:
    request_keys = sorted(inputs)
    signature_keys = sorted(signature.inputs)
    if len(inputs) > len(signature.inputs) or (
        len(inputs) < len(signature.inputs) and not signature.defaults
    ):
        extra = sorted(set(request_keys) - set(signature_keys))
        missing = sorted(set(signature_keys) - set(request_keys))
        raise invalid_argument(
            f"input size does not match signature: {len(inputs)}!={len(signature.inputs)} "
            f"len({{{','.join(request_keys)}}}) != len({{{','.join(signature_keys)}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )


def _input_values(signature: meta_graph_pb2.SignatureDef, inputs: Mapping, budget: int) -> dict:
    """``saved_model::GetInputValues``: feeds by tensor name, defaults filled in.

    Every TensorProto is sized before it is decoded; all inputs together may take at
    most ``budget`` bytes.
    """
    feeds: dict[str, np.ndarray] = {}
    left = budget
    seen = set()
    for alias, info in signature.inputs.items():
        if alias in inputs:
            value = inputs[alias]
            seen.add(alias)
        elif alias in signature.defaults:
            value = signature.defaults[alias]
        else:
            raise invalid_argument(
                f"Signature input alias: {alias}(feed name: {info.name}) not found in request "
                "and no default value provided. Inputs expected to be in the request "
                f"{{{','.join(sorted(signature.inputs))}}}, or default input alias set: "
                f"{','.join(sorted(signature.defaults))}"
            )
        if isinstance(value, tensor_pb2.TensorProto):
            proto = value
            try:
                value = tensor_codec.to_numpy(proto, max_bytes=left, name=f"Input {alias!r}")
            except tensor_codec.TensorTooLarge as error:
                raise invalid_argument(
                    f"{error} per request (--max_request_tensor_bytes={budget} for all inputs "
                    "together)"
                ) from None
            except tensor_codec.TensorError:
                raise invalid_argument(f"tensor parsing error: {alias}") from None
            left -= tensor_codec.proto_nbytes(proto)
        feeds[info.name] = value
    if seen and len(seen) != len(inputs):
        unexpected = [alias for alias in inputs if alias not in seen]
        raise invalid_argument(
            f"Inputs contains invalid name. Used request inputs: {','.join(sorted(seen))}, "
            f"request input: {','.join(unexpected)}"
        )
    return feeds


def _output_targets(
    signature: meta_graph_pb2.SignatureDef, output_filter: Sequence[str]
) -> tuple[list[str], list[str]]:
    aliases: list[str] = []
    names: list[str] = []
    for alias in output_filter:
        info = signature.outputs.get(alias)
        if info is None:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in aliases:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        aliases.append(alias)
        names.append(info.name)
    if not aliases:
        for alias, info in signature.outputs.items():
            aliases.append(alias)
            names.append(info.name)
    return aliases, names


# ----------------------------------------------------------------------------------------
# Classify and Regress over serialized tf.Examples.


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """``InputToSerializedExampleTensor``: context bytes are prepended to each example."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        context = with_context.context.SerializeToString()
        # Concatenated serializations parse as one merged Example: the example's own
        # features win over the context's.
        examples = [context + e.SerializeToString() for e in with_context.examples]
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    tensor = np.empty(len(examples), dtype=object)
    tensor[:] = examples
    return tensor


def _shape_string(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _example_signature(servable: Servable, name: str, check_method: bool, method: str, kind: str):
    """The Classify/Regress signature ``name``; ``kind`` is "classification" or "regression"."""
    key = _signature_key(name)
    signature = servable.signature_defs.get(key)
    if signature is None:
        raise invalid_argument(f"No signature was found with the name: {key}")
    _check_method(signature, check_method, method, kind)
    return signature


def _check_method(signature, check_method: bool, method: str, kind: str) -> None:
    if check_method and signature.method_name != method:
        raise invalid_argument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )


# A signature of another kind (Classify on a regress or predict signature, Regress on a
# classify one, and MultiInference tasks likewise) fails these checks with INVALID_ARGUMENT:
# TF Serving answered FAILED_PRECONDITION before 2.4 and INVALID_ARGUMENT since its commit
# b724ceda (classifier.cc/regressor.cc, PreProcessClassification/PreProcessRegression).
def _classify_targets(signature, check_method: bool = False) -> tuple[str, list[str]]:
    """``PreProcessClassification``: the input tensor and the classes/scores tensors."""
    _check_method(signature, check_method, CLASSIFY_METHOD, "classification")
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(
            f"Expected one or two output Tensors, found {len(signature.outputs)}"
        )
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {signature}")
    classes = signature.outputs.get("classes")
    scores = signature.outputs.get("scores")
    if "classes" not in signature.outputs and "scores" not in signature.outputs:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {signature}'
        )
    names = []
    if "classes" in signature.outputs:
        names.append(classes.name)
    if "scores" in signature.outputs:
        names.append(scores.name)
    return signature.inputs["inputs"].name, names


def _classification_result(
    signature, num_examples: int, names: list[str], outputs: list[np.ndarray]
) -> list[list[tuple[bytes, float]]]:
    """``PostProcessClassificationResult``."""
    by_name = dict(zip(names, outputs, strict=True))
    aliases = signature.outputs
    classes = by_name.get(aliases["classes"].name) if "classes" in aliases else None
    scores = by_name.get(aliases["scores"].name) if "scores" in aliases else None
    for tensor, what, dtype in ((classes, "classes", "DT_STRING"), (scores, "scores", "DT_FLOAT")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape_string(tensor)}"
            )
        actual = tensor_codec.enum_name(tensor_codec.dtype_of(tensor))
        if actual != dtype:
            raise invalid_argument(f"Expected {what} Tensor of {dtype}. Got: {actual}")
        if tensor.shape[0] != num_examples:
            raise invalid_argument(
                f"Expected {what} output batch size of {num_examples}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    results = []
    for row in range(num_examples):
        entries = []
        for column in range(num_classes):
            label = classes[row, column] if classes is not None else b""
            score = float(scores[row, column]) if scores is not None else 0.0
            entries.append((label if isinstance(label, bytes) else str(label).encode(), score))
        results.append(entries)
    return results


def _regress_targets(signature, check_method: bool = False) -> tuple[str, list[str]]:
    """``PreProcessRegression``."""
    _check_method(signature, check_method, REGRESS_METHOD, "regression")
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {signature}")
    if "outputs" not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {signature}")
    return signature.inputs["inputs"].name, [signature.outputs["outputs"].name]


def _regression_result(num_examples: int, output: np.ndarray) -> list[float]:
    """``PostProcessRegressionResult``."""
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got {_shape_string(output)}"
        )
    if output.shape[0] != num_examples:
        raise invalid_argument(
            "Input batch size did not match output batch size: "
            f"{num_examples} vs. {output.shape[0]}"
        )
    actual = tensor_codec.enum_name(tensor_codec.dtype_of(output))
    if actual != "DT_FLOAT":
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {actual}")
    return [float(v) for v in output.ravel()]


def classify(
    context: InferenceContext,
    servable: Servable,
    model_name: str,
    signature_name: str,
    request_input: input_pb2.Input,
    timeout_ms: int | None = None,
) -> list[list[tuple[bytes, float]]]:
    """Runs a ``tensorflow/serving/classify`` signature; one (label, score) list per example."""
    signature, count, names, outputs = _run_examples(
        context, servable, model_name, signature_name, request_input, timeout_ms, "Classify"
    )
    return _classification_result(signature, count, names, outputs)


def regress(
    context: InferenceContext,
    servable: Servable,
    model_name: str,
    signature_name: str,
    request_input: input_pb2.Input,
    timeout_ms: int | None = None,
) -> list[float]:
    """Runs a ``tensorflow/serving/regress`` signature; one value per example."""
    _, count, _, (output,) = _run_examples(
        context, servable, model_name, signature_name, request_input, timeout_ms, "Regress"
    )
    return _regression_result(count, output)


# API -> (method name, signature kind in errors, PreProcess* of its signature).
_EXAMPLE_APIS = {
    "Classify": (CLASSIFY_METHOD, "classification", _classify_targets),
    "Regress": (REGRESS_METHOD, "regression", _regress_targets),
}


def _run_examples(context, servable, model_name, signature_name, request_input, timeout_ms, api):
    """Classify or Regress: (signature, example count, fetched names, outputs)."""
    method, kind, targets = _EXAMPLE_APIS[api]
    check = context.signature_method_name_check
    signature = _example_signature(servable, signature_name, check, method, kind)
    input_name, names = targets(signature)
    cost = examples_cost(context, servable, _signature_key(signature_name), request_input)
    examples = serialized_examples(request_input)
    _record_examples(context, model_name, len(examples))
    with _admitted(context, cost):
        feeds = {input_name: examples}
        outputs = _run(context, servable, model_name, api, feeds, names, timeout_ms)
    return signature, len(examples), names, outputs


def _record_examples(context: InferenceContext, model_name: str, count: int) -> None:
    context.metrics.example_counts.add(model_name, value=count)
    context.metrics.example_count_total.increment(model_name, by=count)


def classification_proto(results: list[list[tuple[bytes, float]]]):
    result = classification_pb2.ClassificationResult()
    for entries in results:
        classifications = result.classifications.add()
        for label, score in entries:
            classifications.classes.add(
                label=label.decode("utf-8", "replace"), score=np.float32(score)
            )
    return result


def regression_proto(values: list[float]):
    result = regression_pb2.RegressionResult()
    for value in values:
        result.regressions.add(value=np.float32(value))
    return result


def multi_inference(
    context: InferenceContext,
    servable: Servable,
    request: inference_pb2.MultiInferenceRequest,
    timeout_ms: int | None = None,
) -> inference_pb2.MultiInferenceResponse:
    """``TensorFlowMultiInferenceRunner::Infer``: several classify/regress heads, one run."""
    model_name = ""
    input_name = ""
    seen = set()
    output_names: set[str] = set()
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = task.model_spec.name
        elif model_name != task.model_spec.name:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        key = _signature_key(task.model_spec.signature_name)
        if key in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise invalid_argument(f"Requested signature not found in model graph: {key}")
        check = context.signature_method_name_check
        if task.method_name == CLASSIFY_METHOD:
            name, names = _classify_targets(signature, check)
        elif task.method_name == REGRESS_METHOD:
            name, names = _regress_targets(signature, check)
        else:
            raise ServingError(
                Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}"
            )
        if input_name and input_name != name:
            raise invalid_argument("Input tensor must be the same for all Signatures.")
        input_name = name
        output_names.update(names)
    fetches = sorted(output_names)
    # Charged as the costliest of its signatures (they share one input and one run).
    costs = [examples_cost(context, servable, key, request.input) for key in sorted(seen)]
    cost = max(costs, key=lambda c: c.nbytes, default=admission.Cost())
    examples = serialized_examples(request.input)
    with _admitted(context, cost):
        outputs = _run(
            context,
            servable,
            model_name,
            "MultiInference",
            {input_name: examples},
            fetches,
            timeout_ms,
        )
    _record_examples(context, model_name, len(examples))
    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
        key = _signature_key(task.model_spec.signature_name)
        signature = servable.signature_defs[key]
        result = response.results.add()
        if task.method_name == CLASSIFY_METHOD:
            _, names = _classify_targets(signature)
            selected = [outputs[fetches.index(n)] for n in names]
            classes = _classification_result(signature, len(examples), names, selected)
            result.classification_result.CopyFrom(classification_proto(classes))
        else:
            _, names = _regress_targets(signature)
            values = _regression_result(len(examples), outputs[fetches.index(names[0])])
            result.regression_result.CopyFrom(regression_proto(values))
        result.model_spec.CopyFrom(
            make_model_spec(task.model_spec.name, task.model_spec.signature_name, servable.version)
        )
    return response


# ----------------------------------------------------------------------------------------
# Metadata.


def validate_metadata_request(request: get_model_metadata_pb2.GetModelMetadataRequest) -> None:
    """``GetModelMetadataImpl::ValidateGetModelMetadataRequest``."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for name in request.metadata_field:
        if name != "signature_def":
            raise invalid_argument(f"Metadata field {name} is not supported")


def signature_def_map(servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
    result = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in servable.signature_defs.items():
        result.signature_def[name].CopyFrom(signature)
    return result


def metadata_response(
    servable: Servable, model_name: str
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model_name
    response.model_spec.version.value = servable.version
    response.metadata["signature_def"].Pack(signature_def_map(servable))
    return response

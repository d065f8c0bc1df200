"""Our Beam ``ModelHandler`` for an exported keras-vit SavedModel, fed encoded image bytes.

Beam 2.77's own ``TFModelHandlerTensor`` imports ``tensorflow_hub`` and loads
with ``tf.keras.models.load_model``; neither works beside Keras 3 / TF 2.21. This
handler loads the export with ``tf.saved_model.load`` and calls its
``serving_default`` signature (``docs/serving-contract.md``) on the bytes as they
were read: the same decoder, resize and model TF Serving runs, so the batch
predictions equal the online ones.

One bad image must not fail its batch. The signature refuses a whole batch with
``INVALID_ARGUMENT`` and names the first bad element: ``image_bytes[2]: truncated
JPEG: ...``. :class:`ImageClassifier` then takes that element out as a failure
with that reason and runs the rest again, so a batch with ``b`` bad images costs
``b + 1`` calls and every good image still gets its prediction. A batch refused
only for its total pixels (the export's ``max_request_pixels``) is split at the
element named instead, as its images are fine on their own.

Example::

    handler = KeyedModelHandler(SavedModelHandler("models/vit/1", batch_size=32))
    keyed_bytes | RunInference(handler)  # (path, {"label": ...} or {"error": reason})
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

from serving.batch.model_dir import INPUT, OUTPUTS, SIGNATURE
from serving.file_formats import unquote

# The message of the export's decoder (keras_vit/decode.py): "image_bytes[<index>]: <reason>]".
_BAD_ELEMENT = re.compile(re.escape(INPUT) + r"\[(\d+)\]: (.*?)\]?(?:\n|$)")
# The reason when only the batch as a whole is too large (decode.REQUEST_PIXELS).
_REQUEST_BUDGET = "the images of this request add up to "


def _import_tensorflow():
    # Here, not at the top: Beam's launcher imports this module without running a model. In a
    # worker process `serving` is imported first, so the import is filtered by keras_vit/quiet.py
    # under the launcher's own choice (the environment it inherits).
    import tensorflow as tf

    return tf


class ImageClassifier:
    """A loaded SavedModel: ``classify(encoded_images)`` -> one result dict per image.

    A result is ``{"label", "score", "top_k_labels", "top_k_scores"}`` or
    ``{"error": reason}``, in the order of the inputs. Only plain Python values go
    in and out, so the object also works behind Beam's cross-process proxy
    (``share_model_across_processes``).
    """

    def __init__(self, path: str):
        tf = _import_tensorflow()

        from serving import int8_runtime

        self.path = path
        self._body = None
        if int8_runtime.is_int8_version(path):
            # An int8 version: its TF part decodes and ranks, OpenVINO runs the body.
            self._body = int8_runtime.Int8Body(path)
            self._loaded = tf.saved_model.load(int8_runtime.tf_part(path))
            self._signature = self._loaded.signatures[int8_runtime.FRONT + SIGNATURE]
            self._predictions = self._loaded.signatures[int8_runtime.PREDICTIONS]
        else:
            self._loaded = tf.saved_model.load(path)  # keeps the variables alive
            self._signature = self._loaded.signatures[SIGNATURE]
        self.calls = 0  # signature calls, retries included

    def classify(self, images: Sequence[bytes]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [{}] * len(images)
        pending = [list(range(len(images)))]
        # Each failed call settles one element or splits a part in two: at most 2n calls.
        while pending:
            part = pending.pop()
            if not part:
                continue
            try:
                outputs = self._call([images[i] for i in part])
            except _BadImage as bad:
                # An older export quotes a non-image's bytes: its format is named instead.
                if len(part) == 1:
                    results[part[0]] = {"error": unquote(bad.reason, images[part[0]])}
                elif bad.index is None or bad.index >= len(part):
                    pending.extend([i] for i in part)  # no element named: each on its own
                elif bad.reason.startswith(_REQUEST_BUDGET) and bad.index > 0:
                    pending += [part[: bad.index], part[bad.index :]]
                else:
                    bad_image = images[part[bad.index]]
                    results[part[bad.index]] = {"error": unquote(bad.reason, bad_image)}
                    pending.append(part[: bad.index] + part[bad.index + 1 :])
                continue
            labels, scores = outputs["top_k_labels"], outputs["top_k_scores"]
            for row, i in enumerate(part):
                results[i] = {
                    "label": outputs["label"][row].decode("utf-8"),
                    "score": float(outputs["score"][row]),
                    "top_k_labels": [label.decode("utf-8") for label in labels[row]],
                    "top_k_scores": [float(score) for score in scores[row]],
                }
        return results

    def _call(self, images: list[bytes]) -> dict:
        import tensorflow as tf

        self.calls += 1
        try:
            outputs = self._signature(**{INPUT: tf.constant(images, dtype=tf.string)})
        except tf.errors.InvalidArgumentError as error:
            raise _BadImage(error.message) from None
        if self._body is not None:
            from serving.int8_runtime import LOGITS, PIXELS

            logits, _ = self._body.run(outputs[PIXELS].numpy())
            outputs = self._predictions(**{LOGITS: tf.constant(logits)})
        return {name: outputs[name].numpy() for name in OUTPUTS}


class _BadImage(Exception):
    """The signature refused the batch; ``index`` is the element it named, if it named one."""

    def __init__(self, message: str):
        match = _BAD_ELEMENT.search(message)
        self.index = int(match.group(1)) if match else None
        lines = message.strip().splitlines() or ["INVALID_ARGUMENT"]
        self.reason = match.group(2).strip() if match else lines[-1].strip()
        super().__init__(self.reason)


class SavedModelHandler(ModelHandler[bytes, dict, ImageClassifier]):
    """Runs an exported keras-vit model's ``serving_default`` on encoded images.

    Args:
        model_dir: the version directory (``models/vit/1``; ``gs://`` works with
            ``apache-beam[gcp]``), as :func:`serving.batch.model_dir.resolve_model_dir`
            gives it.
        batch_size: images per call of the signature (``batch_elements_kwargs``:
            fixed, not Beam's adaptive sizing, so the cost per call is predictable;
            a bundle's last batch may be smaller).
        share_model: one copy of the model per machine, shared by the SDK worker
            processes through Beam's ``multi_process_shared`` proxy (less memory,
            one process computing); by default each worker process loads its own.
    """

    def __init__(self, model_dir: str, *, batch_size: int = 32, share_model: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        super().__init__(
            min_batch_size=batch_size, max_batch_size=batch_size, large_model=share_model
        )
        self.model_dir = model_dir
        self.batch_size = batch_size

    def load_model(self) -> ImageClassifier:
        return ImageClassifier(self.model_dir)

    def run_inference(
        self,
        batch: Sequence[bytes],
        model: ImageClassifier,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[dict]:
        return model.classify(list(batch))

    def get_num_bytes(self, batch: Sequence[bytes]) -> int:
        return sum(len(image) for image in batch)

    def get_metrics_namespace(self) -> str:
        return "keras_vit.batch_predict"

"""Who classifies the images: the model in this process, or a TF-Serving-compatible server.

Both take a batch of *encoded* images and return, per image, the top-k
``(label, score)`` pairs, best first, so that the report is the same either way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from keras_vit.images import decode_bytes
from serving.client.errors import InvalidArgumentError

TopK = list[tuple[str, float]]


class LocalPredictor:
    """The model in this process; decodes and resizes as evaluation during training does."""

    kind = "in-process"

    def __init__(self, model, top_k: int = 5):
        self.model = model
        self.labels = list(model.labels)
        self.top_k = min(top_k, len(self.labels))
        # The report adds the kind: "Model: vit_classifier (in-process)".
        self.description = getattr(model, "name", "model")

    def predict(self, encoded: Sequence[bytes]) -> tuple[list[TopK], float]:
        """``(top-k per image, seconds spent in the model)``."""

        size = tuple(self.model.image_size)
        pixels = np.stack([decode_bytes(data, size) for data in encoded])
        started = time.perf_counter()
        logits = np.asarray(self.model.predict_on_batch(pixels), dtype=np.float64)
        elapsed = time.perf_counter() - started
        probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
        order = np.argsort(-probabilities, axis=-1, kind="stable")[:, : self.top_k]
        rows = [
            [(self.labels[i], float(p[i])) for i in indices]
            for p, indices in zip(probabilities, order, strict=True)
        ]
        return rows, elapsed

    def close(self) -> None:
        pass


class ServerPredictor:
    """A served model, through :class:`serving.client.ServingClient` (gRPC or REST)."""

    kind = "server"

    def __init__(self, client):
        self.client = client
        # "Model: vit at localhost:8500 over grpc (server)" in the report.
        self.description = f"{client.model_name} at {client.target} over {client.protocol}"

    def predict(self, encoded: Sequence[bytes]) -> tuple[list[TopK | str], float]:
        """``(top-k per image, seconds the request took)``.

        An image the server refuses (INVALID_ARGUMENT: truncated, not an image) fails its
        whole request; the images of that request are then sent one at a time, and a
        refused one gets the server's message in place of its top-k, so that one bad
        file does not stop the evaluation (the in-process mode skips such files when
        it lists the folder).
        """

        started = time.perf_counter()
        try:
            predictions = self.client.predict(list(encoded))
        except InvalidArgumentError:
            if len(encoded) == 1:
                raise
            rows: list[TopK | str] = []
            for data in encoded:
                try:
                    rows.append(list(self.client.predict([data])[0].top_k))
                except InvalidArgumentError as error:
                    rows.append(str(error))
            return rows, time.perf_counter() - started
        elapsed = time.perf_counter() - started
        return [list(p.top_k) for p in predictions], elapsed

    def close(self) -> None:
        self.client.close()

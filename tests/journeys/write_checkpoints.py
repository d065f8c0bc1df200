"""Writes the journeys' checkpoints with transformers itself, and its pipeline's answers.

Run in its own process (transformers' TF classes switch ``tf.keras`` to Keras 2)::

    python tests/journeys/write_checkpoints.py OUT_DIR PHOTO_DIR

Every model has the same tiny, odd configuration: hidden 36, 3 heads (head
dim 12), MLP 72, 2 layers, 40 px images, 8 px patches (25 patches).

* ``OUT/in21k_tf``  — ``TFViTModel.save_pretrained``: a headless ``tf_model.h5``
  with the pooler, as ``google/vit-base-patch16-224-in21k`` ships it;
* ``OUT/in21k_pt``  — ``ViTModel.save_pretrained``: the same, PyTorch-named
  ``model.safetensors``;
* ``OUT/augreg.npz`` — a vit_jax/AugReg-layout ``.npz`` with a 21,843-class head,
  written from a ``ViTForImageClassification`` with the documented mapping;
* ``OUT/classifier`` — ``ViTForImageClassification`` with named labels and
  ``preprocessor_config.json`` (ImageNet mean/std, so that normalisation bugs show);
* ``OUT/pipeline.json`` — ``transformers.pipeline("image-classification")`` on
  every image in ``PHOTO_DIR`` for ``classifier``: all labels with their scores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.convert.hf_reference import _perturb, _vit_jax_npz

CONFIG = dict(
    hidden_size=36,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=72,
    image_size=40,
    patch_size=8,
)
CLASSIFIER_LABELS = ["astronaut", "cat", "coffee", "rocket", "moon"]
IN21K_CLASSES = 21843


def main(out: Path, photos: Path) -> None:
    from transformers import (
        TFViTModel,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
        ViTModel,
        pipeline,
    )

    out.mkdir(parents=True, exist_ok=True)
    # The in21k processor: mean = std = 0.5, the checkpoint's own size.
    processor = ViTImageProcessor(size={"height": 40, "width": 40})

    backbone = ViTModel(ViTConfig(**CONFIG)).eval()
    _perturb(backbone, 11)
    backbone.save_pretrained(out / "in21k_pt")
    processor.save_pretrained(out / "in21k_pt")
    TFViTModel.from_pretrained(out / "in21k_pt", from_pt=True).save_pretrained(out / "in21k_tf")
    processor.save_pretrained(out / "in21k_tf")

    in21k = ViTForImageClassification(ViTConfig(**CONFIG, num_labels=IN21K_CLASSES)).eval()
    _perturb(in21k, 12)
    state = {k: v.numpy() for k, v in in21k.state_dict().items()}
    layers, heads = CONFIG["num_hidden_layers"], CONFIG["num_attention_heads"]
    _vit_jax_npz(state, layers, heads, out / "augreg.npz")

    id2label = dict(enumerate(CLASSIFIER_LABELS))
    classifier = ViTForImageClassification(ViTConfig(**CONFIG, id2label=id2label)).eval()
    _perturb(classifier, 13)
    classifier.save_pretrained(out / "classifier")
    ViTImageProcessor(
        size={"height": 40, "width": 40},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(out / "classifier")

    classify = pipeline("image-classification", model=str(out / "classifier"), framework="pt")
    images = sorted(str(p) for p in photos.iterdir())
    answers = {Path(path).name: classify(path, top_k=len(CLASSIFIER_LABELS)) for path in images}
    (out / "pipeline.json").write_text(json.dumps(answers, indent=1))
    (out / "done").write_text("ok")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

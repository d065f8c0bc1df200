"""Stand-ins for what the README and docs/*.md name but a test machine lacks.

``python tests/readme_fixtures.py OUT`` writes, once per change of this script or of
transformers (``tests/support/cache.py`` keeps it across test runs), what transformers
and scikit-image write:

- ``hf-tiny/``: a tiny ViT checkpoint written by transformers
  (``ViTForImageClassification.save_pretrained``: ``config.json`` with the
  ImageNet-1k ``id2label``, ``model.safetensors``, ``preprocessor_config.json``);
- ``hf-cache/``: a Hugging Face Hub cache (``HF_HUB_CACHE``) in which
  ``google/vit-base-patch16-224`` (and the other hub ids of ``HUB_IDS``) are that
  tiny checkpoint, so the documented hub ids load offline, unchanged;
- ``images/``: real photos from scikit-image, as JPEG and PNG files.

``write_keras_files(OUT)`` then adds, with this checkout's keras_vit, once per test
session (``tests/test_readme.py`` calls it in the test process):

- ``tiny.npz``: the same architecture in Google's vit_jax layout;
- ``run/``: a keras-vit run directory (``model.keras``, labels ``cat``/``dog``);
- ``export/vit/1/``: that model exported for TF Serving.

transformers runs in its own process (its TF classes switch ``tf.keras`` to
Keras 2 process-wide), so this script imports it before anything else.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

# The hub ids the docs use, each with the number of classes of its tiny stand-in.
HUB_IDS = {
    "google/vit-base-patch16-224": 1000,
    "google/vit-base-patch16-224-in21k": 10,
}
SNAPSHOT = "0" * 40  # the commit hash the cache says "main" points to
TINY = dict(
    image_size=32,
    patch_size=8,
    num_hidden_layers=2,
    num_attention_heads=3,
    hidden_size=48,
    intermediate_size=96,
)
# scikit-image's photos, by the file names the docs use.
PHOTOS = {"cat": "chelsea", "dog": "astronaut", "coffee": "coffee", "rocket": "rocket"}


def write_hf_checkpoint(out: Path, num_classes: int) -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from keras_vit.imagenet import imagenet_1k_labels

    names = (
        imagenet_1k_labels() if num_classes == 1000 else [f"LABEL_{i}" for i in range(num_classes)]
    )
    config = ViTConfig(**TINY, id2label=dict(enumerate(names)), label2id={})
    torch.manual_seed(num_classes)
    ViTForImageClassification(config).save_pretrained(out, safe_serialization=True)
    size = {"height": TINY["image_size"], "width": TINY["image_size"]}
    ViTImageProcessor(size=size).save_pretrained(out)


def write_hub_cache(cache: Path, repo_id: str, checkpoint: Path) -> None:
    """The layout huggingface_hub reads offline: refs/main -> snapshots/<hash>/<files>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    for file in checkpoint.iterdir():
        shutil.copy(file, snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)


def write_images(out: Path) -> None:
    from PIL import Image
    from skimage import data

    out.mkdir(parents=True)
    for name, photo in PHOTOS.items():
        image = Image.fromarray(getattr(data, photo)()).convert("RGB")
        image.thumbnail((256, 256))
        image.save(out / f"{name}.jpg", quality=90)
        image.save(out / f"{name}.png")


def write_keras_files(out: Path) -> None:
    from keras_vit import load_pretrained
    from keras_vit.convert import save_npz
    from serving.export import export_saved_model

    model = load_pretrained(out / "hf-tiny", labels=["cat", "dog"])
    (out / "run").mkdir()
    model.save(out / "run" / "model.keras")
    (out / "run" / "labels.txt").write_text("cat\ndog\n")
    export_saved_model(model, out / "export" / "vit", version=1)
    save_npz(load_pretrained(out / "hf-tiny", layer_norm_epsilon=1e-6), out / "tiny.npz")


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    write_hf_checkpoint(out / "hf-tiny", 1000)
    for repo_id, num_classes in HUB_IDS.items():
        checkpoint = out / ("hf-tiny" if num_classes == 1000 else f"hf-{num_classes}")
        if not checkpoint.exists():
            write_hf_checkpoint(checkpoint, num_classes)
        write_hub_cache(out / "hf-cache", repo_id, checkpoint)
    write_images(out / "images")
    (out / "done").write_text(json.dumps(sorted(p.name for p in out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

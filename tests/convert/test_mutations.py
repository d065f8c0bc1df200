"""Each bug a converter or the model could plausibly have makes a parity check fail.

Every mutation below is applied to correctly loaded models (their weights or
layer attributes), then the very comparisons the parity tests make are
repeated: logits against transformers' TF and PyTorch ViT for every classifier
(test_checkpoint_parity.py, also test_sources.py and test_hub.py), the vit_jax
.npz, the backbone's class token and pooler, the 32->48 px interpolation
(test_position_interpolation.py), HF-processed photos through our network and
our preprocessing against ``ViTImagePreprocessor`` (test_preprocessing_parity.py).

A mutation passes this test only if some check then exceeds its bound. The
printed table (errors per check, and whether the old 1e-4 bound would have
noticed) is copied into benchmarks/results/mutations.md.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

from keras_vit import load_pretrained
from tests.convert.hf_reference import CLASSIFIERS, reference, spec
from tests.convert.parity import TOLERANCE, max_error

# 12 CPU-s in all (tests/support/cpu_report.py): `make test` runs it, `make test-fast` not
pytestmark = pytest.mark.slow

OLD_TOLERANCE = 1e-4  # the bound before issue 23
IMAGENET_MEAN = (0.485, 0.456, 0.406)
PIXEL_BOUND = 2 / 255 + 1e-4  # test_preprocessing_parity's bound on pixels, [-1, 1] units


def _blocks(model):
    return [layer for layer in model.layers if layer.name.startswith("encoder_block_")]


def _epsilon(model):
    """LayerNorm epsilon 1e-6 where the checkpoint says 1e-12 (and the reverse)."""
    for layer in [model.get_layer("encoder_norm")] + [
        n for b in _blocks(model) for n in (b.norm_1, b.norm_2)
    ]:
        layer.epsilon = 1e-6 if layer.epsilon < 1e-9 else 1e-12


def _tanh_gelu(model):
    """The tanh approximation of GELU instead of transformers' exact erf GELU."""
    for block in _blocks(model):
        block.mlp_dense_1.activation = functools.partial(keras.activations.gelu, approximate=True)


def _transposed_qk(model):
    """Query and key kernels taken as (in, out) from PyTorch's (out, in) without the transpose."""
    for block in _blocks(model):
        for dense in (block.attention.query_dense, block.attention.key_dense):
            kernel = keras.ops.convert_to_numpy(dense.kernel)
            d = kernel.shape[0]
            dense.kernel.assign(kernel.reshape(d, d).T.reshape(kernel.shape))


def _dropped_bias(model):
    """The query bias never assigned (left at its zero initialiser)."""
    for block in _blocks(model):
        bias = block.attention.query_dense.bias
        bias.assign(np.zeros(bias.shape, "float32"))


def _no_position_embedding(model):
    """The position embedding never assigned (zeros)."""
    variable = model.get_layer("position_embedding").position_embedding
    variable.assign(np.zeros(variable.shape, "float32"))


def _no_antialias(model):
    """Resize without antialiasing (PIL, and so ViTImageProcessor, antialiases)."""
    model.preprocessor.antialias = False


def _wrong_mean(model):
    """The other common normalisation mean (ImageNet's for 0.5, 0.5 for ImageNet's)."""
    layer = model.preprocessor
    mean = (0.5,) * 3 if layer.image_mean == IMAGENET_MEAN else IMAGENET_MEAN
    layer.offset = [-m / s for m, s in zip(mean, layer.image_std, strict=True)]


MUTATIONS = {
    "layernorm_epsilon": _epsilon,
    "tanh_gelu": _tanh_gelu,
    "transposed_qk_kernel": _transposed_qk,
    "dropped_query_bias": _dropped_bias,
    "missing_position_embedding": _no_position_embedding,
    "resize_without_antialias": _no_antialias,
    "wrong_normalisation_mean": _wrong_mean,
}


def _checks(root, mutate):
    """{check name (the test that makes it): (error, bound)} with ``mutate`` applied."""

    def load(path, **kwargs):
        model = load_pretrained(path, **kwargs)
        mutate(model)
        return model

    out = {}
    for name in CLASSIFIERS:
        ref = reference(root, name)
        logits = load(root / name / "pt")(ref["images"])
        out[f"test_logits_match_transformers[{name}]"] = (
            max(max_error(logits, ref["logits_tf"]), max_error(logits, ref["logits_pt"])),
            TOLERANCE,
        )
    ref = reference(root, "h60_p8_s48")
    out["test_npz_written_from_the_same_weights_matches_transformers"] = (
        max_error(load(root / "h60_p8_s48" / "vit_jax.npz")(ref["images"]), ref["logits_pt"]),
        TOLERANCE,
    )
    ref = reference(root, "backbone_h48")
    model = load(root / "backbone_h48" / "pt", num_classes=4, representation_size=48)
    cls = model.embedding_model()(ref["images"])
    pooled = keras.Model(model.input, model.get_layer("pre_logits").output)(ref["images"])
    out["test_backbone_checkpoint_needs_and_gets_a_new_head"] = (
        max(max_error(cls, ref["cls_pt"]), max_error(pooled, ref["pooler_pt"])),
        TOLERANCE,
    )
    ref = reference(root, "h48_p8_s32")
    logits = load(root / "h48_p8_s32" / "pt", image_size=48)(ref["interp_images"])
    out["test_interpolated_logits_match_tf_vit"] = (
        max_error(logits, ref["interp_logits_tf"]),
        TOLERANCE,
    )
    name = "h72_p4_s40"
    s, ref = spec(name), reference(root, name)
    model = load(root / name / "pt")
    errors, pixel_errors = [], []
    for photo in ("astronaut", "chelsea", "coffee"):
        pixels = ref[f"photo_{photo}_40"].transpose(0, 2, 3, 1)
        raw = (pixels * np.asarray(s["image_std"]) + np.asarray(s["image_mean"])) * 255.0
        errors.append(max_error(model(raw.astype("float32")), ref[f"photo_{photo}_logits_pt"]))
        image = getattr(pytest.importorskip("skimage.data"), photo)()[None]
        ours = keras.ops.convert_to_numpy(model.preprocessor(image))[0]
        diff = np.abs(ours - ref[f"photo_{photo}_40"][0].transpose(1, 2, 0))
        pixel_errors.append(float((diff * np.asarray(s["image_std"]) / 0.5).max()))
    out["test_network_on_hf_pixels_matches_hf_logits"] = (max(errors), TOLERANCE)
    out["test_pixels_match_vit_image_processor[40px]"] = (max(pixel_errors), PIXEL_BOUND)
    return out


@pytest.fixture(scope="module")
def unmutated(hf_reference):
    return _checks(hf_reference, lambda model: None)


def test_every_check_passes_without_a_mutation(unmutated):
    """The control: the same harness on correct models stays inside every bound."""
    for check, (error, bound) in unmutated.items():
        print(f"unmutated | {check} | {error:.2e} | bound {bound:.1e}")
        assert error <= bound, check


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_mutation_fails_a_parity_check(hf_reference, unmutated, mutation):
    checks = _checks(hf_reference, MUTATIONS[mutation])
    caught = [check for check, (error, bound) in checks.items() if error > bound]
    worst = max(error for check, (error, bound) in checks.items() if bound == TOLERANCE)
    print(
        f"\n{mutation} | max logit error {worst:.2e} | old bound 1e-4 "
        f"{'catches' if worst > OLD_TOLERANCE else 'MISSES'} | caught by {', '.join(caught)}"
    )
    for check, (error, bound) in checks.items():
        print(f"  {check}: {error:.2e} (bound {bound:.1e}, unmutated {unmutated[check][0]:.2e})")
    assert caught, f"{mutation} passes every parity check"
    # The main logits test catches every mutation of the network or its normalisation;
    # the resize (an identity at model resolution there) is the pixel test's job.
    if mutation == "resize_without_antialias":
        assert "test_pixels_match_vit_image_processor[40px]" in caught
    else:
        assert any(c.startswith("test_logits_match_transformers") for c in caught)

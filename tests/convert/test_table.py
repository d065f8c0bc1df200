"""The one weight table: every format's rows cover every variable once, with unique source keys."""

from __future__ import annotations

import pytest

from keras_vit.convert import table
from keras_vit.convert.common import plan_conversion

TRANSLATIONS = {
    "hf_tf": table.hf_tf(),
    "hf_tf_headless": table.hf_tf("tf_vi_t_model/vit/"),
    "hf_pt": table.hf_pt(),
    "hf_pt_vitmodel": table.hf_pt(""),
    "vit_jax": table.jax_npz("vit_jax"),
    "big_vision": table.jax_npz("big_vision"),
}


@pytest.mark.parametrize("pre_logits", [False, True])
@pytest.mark.parametrize("name", sorted(TRANSLATIONS))
def test_rows_cover_every_variable_once(name, pre_logits, tiny_config):
    from keras_vit import ViTClassifier

    model = ViTClassifier(**tiny_config, representation_size=16 if pre_logits else None)
    variables = {v.path: tuple(v.shape) for v in model.weights}
    rows = table.rows(TRANSLATIONS[name], model.num_layers, pre_logits)
    assert sorted(row.keras_path for row in rows) == sorted(variables)
    keys = [row.source_key for row in rows]
    assert len(set(keys)) == len(keys)
    plan = plan_conversion(variables, {}, rows)
    assert not plan.uncovered and len(plan.missing) == len(rows)


def test_translations_spell_the_documented_keys():
    """Spot checks against ../shared/docs/checkpoint-layouts.md."""
    tf, pt, npz = table.hf_tf(), table.hf_pt(), table.jax_npz()
    block = "encoder_block_3/attention/query"
    assert tf.key(block, "kernel") == "vit/encoder/layer_._3/attention/attention/query/kernel:0"
    assert pt.key(block, "kernel") == "vit.encoder.layer.3.attention.attention.query.weight"
    assert npz.key(block, "kernel") == (
        "Transformer/encoderblock_3/MultiHeadDotProductAttention_1/query/kernel"
    )
    assert pt.key("encoder_block_0/norm_2", "gamma") == "vit.encoder.layer.0.layernorm_after.weight"
    assert (
        npz.key("encoder_block_0/norm_2", "gamma") == "Transformer/encoderblock_0/LayerNorm_2/scale"
    )
    assert table.jax_npz("big_vision").key("encoder_block_0/mlp_dense_2", "bias") == (
        "Transformer/encoderblock_0/MlpBlock_0/Dense_1/bias"
    )
    assert tf.key("class_token", "class_token") == "vit/embeddings/cls_token:0"
    assert pt.key("head", "kernel") == "classifier.weight"

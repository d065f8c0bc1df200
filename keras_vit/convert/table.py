"""The one table of ViT weights, and the name translation of each checkpoint format.

:func:`weight_table` lists every Keras variable of a ViTClassifier once, as
``(module, parameter, kind)``: ``module`` is the Keras layer path
(``encoder_block_{i}/attention/query``), ``parameter`` the variable name
(``kernel``, ``bias``, ``gamma``, ``beta``) and ``kind`` the tensor's layout
(see :data:`KINDS`). A :class:`NameTranslation` says how one format spells
modules and parameters and which named transform (``common.TRANSFORMS``)
turns each kind into Keras layout; :func:`rows` joins the two into the
converter rows that ``common.load_weights`` checks and assigns.
Layouts: ``../shared/docs/checkpoint-layouts.md`` and docs/checkpoints.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from keras_vit.convert.common import Row

# kind -> what the Keras variable holds
KINDS = {
    "conv_kernel": "patch projection, HWIO (P, P, 3, D)",
    "heads_kernel": "query/key/value kernel (D, heads, head_dim)",
    "heads_bias": "query/key/value bias (heads, head_dim)",
    "heads_output_kernel": "attention output kernel (heads, head_dim, D)",
    "dense_kernel": "Dense kernel (in, out)",
    "position": "position embedding (1, 1 + h*w, D)",
    "plain": "anything stored as in Keras (biases, LayerNorm, class token)",
}
ATTENTION = ("query", "key", "value")


def weight_table(num_layers: int, pre_logits: bool = False) -> list[tuple[str, str, str]]:
    """Every ViTClassifier variable as ``(module, parameter, kind)``, in checkpoint order."""
    table = [
        ("patch_embedding/projection", "kernel", "conv_kernel"),
        ("patch_embedding/projection", "bias", "plain"),
        ("class_token", "class_token", "plain"),
        ("position_embedding", "position_embedding", "position"),
    ]
    for i in range(num_layers):
        block = f"encoder_block_{i}/"
        table += [(f"{block}norm_1", "gamma", "plain"), (f"{block}norm_1", "beta", "plain")]
        for name in ATTENTION:
            table += [
                (f"{block}attention/{name}", "kernel", "heads_kernel"),
                (f"{block}attention/{name}", "bias", "heads_bias"),
            ]
        table += [
            (f"{block}attention/attention_output", "kernel", "heads_output_kernel"),
            (f"{block}attention/attention_output", "bias", "plain"),
            (f"{block}norm_2", "gamma", "plain"),
            (f"{block}norm_2", "beta", "plain"),
            (f"{block}mlp_dense_1", "kernel", "dense_kernel"),
            (f"{block}mlp_dense_1", "bias", "plain"),
            (f"{block}mlp_dense_2", "kernel", "dense_kernel"),
            (f"{block}mlp_dense_2", "bias", "plain"),
        ]
    table += [("encoder_norm", "gamma", "plain"), ("encoder_norm", "beta", "plain")]
    if pre_logits:
        table += [("pre_logits", "kernel", "dense_kernel"), ("pre_logits", "bias", "plain")]
    table += [("head", "kernel", "dense_kernel"), ("head", "bias", "plain")]
    return table


@dataclass(frozen=True)
class NameTranslation:
    """How one checkpoint format names (and lays out) the weights of :func:`weight_table`.

    ``modules`` maps a Keras module to the source's, per block with ``{i}``
    (``"encoder_block_{i}/norm_1"`` -> ``"vit/encoder/layer_._{i}/layernorm_before"``);
    ``tensors`` names whole tensors without a parameter part (class token,
    position embedding); ``parameters`` maps ``kernel``/``bias``/``gamma``/``beta``;
    the key is ``module + separator + parameter + suffix``. ``transforms`` maps
    a kind to a ``common.TRANSFORMS`` name (identity when absent).
    """

    modules: Mapping[str, str]
    tensors: Mapping[str, str]
    parameters: Mapping[str, str]
    separator: str = "/"
    suffix: str = ""
    transforms: Mapping[str, str] = field(default_factory=dict)

    def key(self, module: str, parameter: str) -> str:
        path = f"{module}/{parameter}"
        if path in self.tensors:
            return self.tensors[path]
        block, _, rest = module.partition("/")
        if block.startswith("encoder_block_"):
            index = block[len("encoder_block_") :]
            source = self.modules[f"encoder_block_{{i}}/{rest}"].format(i=index)
        else:
            source = self.modules[module]
        return f"{source}{self.separator}{self.parameters[parameter]}{self.suffix}"


def rows(translation: NameTranslation, num_layers: int, pre_logits: bool = False) -> list[Row]:
    """The converter rows of one format: Keras path, source key, transform."""
    return [
        Row(
            f"{module}/{parameter}",
            translation.key(module, parameter),
            translation.transforms.get(kind, "identity"),
        )
        for module, parameter, kind in weight_table(num_layers, pre_logits)
    ]


def _block_modules(block: str, names: Mapping[str, str]) -> dict[str, str]:
    """``encoder_block_{i}/...`` -> ``block + name`` for every module of an encoder block."""
    return {f"encoder_block_{{i}}/{keras}": block + source for keras, source in names.items()}


def hf_tf(prefix: str = "vit/") -> NameTranslation:
    """transformers TF names (``tf_model.h5``, TF-named safetensors), layout (a)."""
    e = f"{prefix}embeddings/"
    attention = {f"attention/{n}": f"attention/attention/{n}" for n in ATTENTION}
    return NameTranslation(
        modules={
            "patch_embedding/projection": f"{e}patch_embeddings/projection",
            "encoder_norm": f"{prefix}layernorm",
            # TFViTModel's pooler is Dense + tanh on the class token: the original pre-logits.
            "pre_logits": f"{prefix}pooler/dense",
            "head": "classifier",
            **_block_modules(
                f"{prefix}encoder/layer_._{{i}}/",
                {
                    "norm_1": "layernorm_before",
                    **attention,
                    "attention/attention_output": "attention/output/dense",
                    "norm_2": "layernorm_after",
                    "mlp_dense_1": "intermediate/dense",
                    "mlp_dense_2": "output/dense",
                },
            ),
        },
        tensors={
            "class_token/class_token": f"{e}cls_token:0",
            "position_embedding/position_embedding": f"{e}position_embeddings:0",
        },
        parameters={"kernel": "kernel", "bias": "bias", "gamma": "gamma", "beta": "beta"},
        suffix=":0",
        transforms={
            "heads_kernel": "heads_kernel",  # (D, D) -> (D, heads, head_dim)
            "heads_bias": "heads_bias",  # (D,) -> (heads, head_dim)
            "heads_output_kernel": "heads_output_kernel",  # (D, D) -> (heads, head_dim, D)
            "position": "position_embedding",
        },
    )


def hf_pt(prefix: str = "vit.") -> NameTranslation:
    """transformers PyTorch names (``model.safetensors``), layout (b)."""
    e = f"{prefix}embeddings."
    attention = {f"attention/{n}": f"attention.attention.{n}" for n in ATTENTION}
    return NameTranslation(
        modules={
            "patch_embedding/projection": f"{e}patch_embeddings.projection",
            "encoder_norm": f"{prefix}layernorm",
            # ViTModel's pooler is Linear + tanh on the class token: the original pre-logits.
            "pre_logits": f"{prefix}pooler.dense",
            "head": "classifier",
            **_block_modules(
                f"{prefix}encoder.layer.{{i}}.",
                {
                    "norm_1": "layernorm_before",
                    **attention,
                    "attention/attention_output": "attention.output.dense",
                    "norm_2": "layernorm_after",
                    "mlp_dense_1": "intermediate.dense",
                    "mlp_dense_2": "output.dense",
                },
            ),
        },
        tensors={
            "class_token/class_token": f"{e}cls_token",
            "position_embedding/position_embedding": f"{e}position_embeddings",
        },
        parameters={"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"},
        separator=".",
        transforms={
            "conv_kernel": "conv_oihw",  # (O, I, H, W) -> (H, W, I, O)
            "heads_kernel": "linear_heads_kernel",  # (out, in).T -> (D, heads, head_dim)
            "heads_bias": "heads_bias",
            "heads_output_kernel": "linear_heads_output_kernel",  # .T -> (heads, head_dim, D)
            "dense_kernel": "linear",  # (out, in) -> (in, out)
            "position": "position_embedding",
        },
    )


# (attention, norm_2, mlp) module names per .npz variant; norm_1 is LayerNorm_0 in both.
NPZ_SUBMODULES = {
    "vit_jax": ("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    "big_vision": ("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}
VIT_JAX_POSEMB = "Transformer/posembed_input/pos_embedding"
BIG_VISION_POSEMB = "pos_embedding"


def jax_npz(variant: str = "vit_jax") -> NameTranslation:
    """Google's Flax names (vit_jax / AugReg or big_vision ``.npz``), layout (c).

    Flax's attention layout equals Keras', so only the position embedding may
    need work (big_vision stores it without the class-token slot).
    """
    attention, norm_2, mlp = NPZ_SUBMODULES[variant]
    big_vision = variant == "big_vision"
    return NameTranslation(
        modules={
            "patch_embedding/projection": "embedding",  # HWIO, as Keras
            "encoder_norm": "Transformer/encoder_norm",
            "pre_logits": "pre_logits",
            "head": "head",
            **_block_modules(
                "Transformer/encoderblock_{i}/",
                {
                    "norm_1": "LayerNorm_0",
                    **{f"attention/{n}": f"{attention}/{n}" for n in ATTENTION},
                    "attention/attention_output": f"{attention}/out",
                    "norm_2": norm_2,
                    "mlp_dense_1": f"{mlp}/Dense_0",
                    "mlp_dense_2": f"{mlp}/Dense_1",
                },
            ),
        },
        tensors={
            "class_token/class_token": "cls",
            "position_embedding/position_embedding": (
                BIG_VISION_POSEMB if big_vision else VIT_JAX_POSEMB
            ),
        },
        parameters={"kernel": "kernel", "bias": "bias", "gamma": "scale", "beta": "bias"},
        transforms={
            "position": "position_embedding_without_class" if big_vision else "position_embedding"
        },
    )

"""Where the model looks: attention probabilities, attention rollout and overlays.

- :func:`~keras_vit.explain.attention.forward_with_attention`: logits and every
  encoder block's attention probabilities ``(batch, heads, tokens, tokens)``;
- :func:`~keras_vit.explain.rollout.attention_rollout`: Abnar & Zuidema (2020);
- :func:`~keras_vit.explain.gradient.gradient_rollout`: the gradient-weighted,
  class-specific variant (Chefer et al., 2021);
- :func:`~keras_vit.explain.overlay.overlay_image`: the map over the image.
"""

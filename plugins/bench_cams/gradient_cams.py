"""The gradient CAMs: Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM.

Each takes the feature map ``A`` (B, h, w, K) of the model's feature layer, the
pre-softmax class score ``y^c`` and ``g = dy^c/dA`` from one ``GradientTape`` per
batch (:class:`bench_gradcam.featuremap.GradientCAM`: one ``tf.function`` trace
per model and image size, no per-image loop) and combines them into the signed
map (B, h, w) at the feature map's resolution; ``relu=True`` (the default, as in
every definition here) applies the final ReLU. Cost of a map: one forward and one
backward pass of the model, batched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from bench_gradcam.featuremap import GradientCAM


class GradCAMPlusPlus(GradientCAM):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv 1710.11063), closed form.

    With ``S = exp(y^c)`` and a piecewise-linear network (higher derivatives of ``y^c``
    vanish), ``dS/dA = S g``, ``d^2S/dA^2 = S g^2``, ``d^3S/dA^3 = S g^3``, so

    ``alpha_ij^k = g_ij^2 / (2 g_ij^2 + sum_ab A_ab^k g_ij^3)`` (0 where the denominator is 0),
    ``w_k = sum_ij alpha_ij^k ReLU(dS/dA_ij^k)``, ``L = ReLU(sum_k w_k A^k)``.

    Parameters
    ----------
    layer, relu:
        As for Grad-CAM.
    exp:
        ``True`` (default): the paper's exponential form, ``dS/dA = exp(y^c) g`` in the
        weights. ``False``: the common simplification with ``ReLU(g)`` in place of
        ``ReLU(dS/dA)``: the same map divided by the positive per-image factor
        ``exp(y^c)`` (so the same region order). ``exp(y^c)`` overflows float32 above
        ``y^c`` of about 88: such an image raises a ValueError suggesting ``exp=False``.
    """

    label = "Grad-CAM++"

    def __init__(self, *, layer: str | None = None, relu: bool = True, exp: bool = True):
        super().__init__(layer=layer, relu=relu)
        self.exp = exp

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "exp": self.exp}

    def combine(self, features: Any, grads: Any, scores: Any) -> Any:
        import tensorflow as tf

        g2 = tf.square(grads)
        g3 = g2 * grads
        sum_a = tf.reduce_sum(features, axis=(1, 2), keepdims=True)  # (B, 1, 1, K)
        denom = 2.0 * g2 + sum_a * g3
        safe = tf.where(denom != 0.0, denom, tf.ones_like(denom))
        alpha = tf.where(denom != 0.0, g2 / safe, tf.zeros_like(denom))
        d_s = grads * tf.exp(scores)[:, None, None, None] if self.exp else grads
        weights = tf.reduce_sum(alpha * tf.nn.relu(d_s), axis=(1, 2))  # (B, K)
        return tf.einsum("bhwk,bk->bhw", features, weights)

    def _explain(self, model: Any, images: np.ndarray, targets: np.ndarray) -> Any:
        maps = np.asarray(super()._explain(model, images, targets))
        bad = ~np.isfinite(maps).reshape(len(maps), -1).all(axis=1)
        if self.exp and bad.any():
            raise ValueError(
                f"Grad-CAM++: exp(y^c) overflows float32 for {int(bad.sum())} image(s) of the batch "
                f"(first: image {int(np.flatnonzero(bad)[0])}; class scores above ~88); use exp=False, "
                "the same map divided by exp(y^c) (the same region order)"
            )
        return maps


class XGradCAM(GradientCAM):
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv 2008.02312).

    ``w_k = sum_ij (A_ij^k / (sum_ab A_ab^k + eps)) g_ij^k``, ``L = ReLU(sum_k w_k A^k)``.

    Parameters
    ----------
    layer, relu:
        As for Grad-CAM.
    eps:
        Added to the channel sums (default 1e-7) so that an all-zero channel gets weight 0.
    """

    label = "XGrad-CAM"

    def __init__(self, *, layer: str | None = None, relu: bool = True, eps: float = 1e-7):
        super().__init__(layer=layer, relu=relu)
        self.eps = eps

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "eps": self.eps}

    def validate(self) -> None:
        if isinstance(self.eps, bool) or not isinstance(self.eps, int | float) or not self.eps > 0:
            raise ValueError(f"XGrad-CAM eps must be a positive number, got {self.eps!r}")

    def combine(self, features: Any, grads: Any, scores: Any) -> Any:
        import tensorflow as tf

        sum_a = tf.reduce_sum(features, axis=(1, 2), keepdims=True)
        weights = tf.reduce_sum(features / (sum_a + float(self.eps)) * grads, axis=(1, 2))
        return tf.einsum("bhwk,bk->bhw", features, weights)


class LayerCAM(GradientCAM):
    """LayerCAM (Jiang et al., IEEE TIP 2021): ``L = ReLU(sum_k ReLU(g^k) * A^k)`` element-wise."""

    label = "LayerCAM"

    def combine(self, features: Any, grads: Any, scores: Any) -> Any:
        import tensorflow as tf

        return tf.reduce_sum(tf.nn.relu(grads) * features, axis=-1)


class HiResCAM(GradientCAM):
    """HiResCAM (Draelos & Carin 2020, arXiv 2011.08891): ``L = ReLU(sum_k g^k * A^k)`` element-wise.

    No spatial averaging of the gradients: the map is exactly the feature layer's share of
    ``y^c`` position by position when the head is linear in ``A``.
    """

    label = "HiResCAM"

    def combine(self, features: Any, grads: Any, scores: Any) -> Any:
        import tensorflow as tf

        return tf.reduce_sum(grads * features, axis=-1)

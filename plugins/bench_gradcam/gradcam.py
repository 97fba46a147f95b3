"""Grad-CAM (Selvaraju et al., arXiv 1610.02391), batched.

``L^c = ReLU(sum_k a_k^c A^k)``, ``a_k^c = mean_ij d y^c / d A^k_ij``, with
``A`` the feature map of the model's ``feature_layer`` (9x9 at 299 px for the
study's VGG16 / DenseNet201 models) and ``y^c`` the pre-softmax logit of the
target class. One ``GradientTape`` per batch inside one ``tf.function`` (a
fixed signature with a free batch dimension: traced once per model and image
size), no per-image loop. Returns the feature-map-sized map (N, h, w) float32;
the harness maps it onto the region grid. The machinery (layer resolution,
nested backbones, tracing, input checks) is shared with the rest of the CAM
family in :mod:`bench_gradcam.featuremap`.
"""

from __future__ import annotations

from typing import Any

from .featuremap import GradientCAM


class GradCAM(GradientCAM):
    """Grad-CAM explainer.

    Parameters
    ----------
    layer:
        Name of the feature layer; ``None`` (default) uses ``model.feature_layer``.
        Another name must be a top-level layer of ``model.keras`` with a 4-D output.
    relu:
        Apply the ReLU of the definition (default). ``False`` returns the signed
        weighted sum (negative evidence included).
    """

    label = "Grad-CAM"

    def combine(self, features: Any, grads: Any, scores: Any) -> Any:
        import tensorflow as tf

        weights = tf.reduce_mean(grads, axis=(1, 2))  # (B, C)
        return tf.einsum("bhwc,bc->bhw", features, weights)

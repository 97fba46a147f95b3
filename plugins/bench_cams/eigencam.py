"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, arXiv 2008.00299): gradient- and class-free.

The feature map ``A`` (h, w, K) of an image, as an (h*w, K) matrix with each
channel's mean over the positions subtracted, is projected on its first principal
direction (first right singular vector ``v_1``): ``L = (A - mean) v_1`` reshaped to
(h, w). A singular vector's sign is arbitrary; it is chosen so that the map
correlates positively with the mean activation over channels (``mean_k A^k``). No
ReLU: the projection is signed. Batched SVD in one ``tf.function`` per model and
image size; cost: one forward pass per map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from bench_gradcam.featuremap import FeatureMapExplainer

from bench.engine.tracing import graph_function


class EigenCAM(FeatureMapExplainer):
    """Eigen-CAM explainer (the target class is ignored: the map is the same for every class).

    Parameters
    ----------
    layer:
        Name of the feature layer; ``None`` (default) uses ``model.feature_layer``.
    """

    label = "Eigen-CAM"

    def __init__(self, *, layer: str | None = None):
        self.layer = layer

    def get_params(self) -> dict[str, Any]:
        return {"layer": self.layer}

    def passes_per_map(self) -> float:
        """Forward-pass equivalents per map: one forward pass to the feature layer (no gradient)."""
        return 1.0

    def _explain(self, model: Any, images: np.ndarray, targets: np.ndarray) -> Any:
        import tensorflow as tf

        def build(source: Any) -> Any:
            def eigen(x: Any, t: Any) -> Any:
                features, _ = source.features_and_logits(x)
                shape = tf.shape(features)
                m = tf.reshape(features, (shape[0], shape[1] * shape[2], shape[3]))
                centred = m - tf.reduce_mean(m, axis=1, keepdims=True)
                s, u, _ = tf.linalg.svd(centred, full_matrices=False)
                proj = u[:, :, 0] * s[:, :1]  # = centred @ v_1
                agree = tf.reduce_sum(proj * tf.reduce_mean(m, axis=2), axis=1, keepdims=True)
                proj = tf.where(agree < 0, -proj, proj)
                return tf.reshape(proj, shape[:3])

            return graph_function(eigen, input_signature=self._image_signature(images.shape[1:]))

        fn = self._traced(model, tuple(images.shape[1:]), build)
        return fn(tf.constant(images), tf.constant(targets))

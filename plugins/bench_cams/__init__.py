"""The CAM family over the model's feature layer: Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM,
Eigen-CAM, Score-CAM, Ablation-CAM.

Every map is (N, h, w) at the feature layer's resolution (the harness maps it onto the
region grid); ``A`` is the feature map, ``y^c`` the target's pre-softmax logit, ``g = dy^c/dA``.
Costs are per map, in forward passes of the model (a backward pass costs about two).
The shared machinery (nested backbones, tracing once) is :mod:`bench_gradcam.featuremap`.
"""

from bench import ExplainerSpec, hookimpl

__version__ = "0.1.0"

_GRAD = {"layer": None, "relu": True}


@hookimpl
def bench_register_explainers():
    return [
        ExplainerSpec(
            name="gradcam-plus-plus",
            factory="bench_cams.gradient_cams:GradCAMPlusPlus",
            description=(
                "Grad-CAM++ (closed form, S=exp(y^c)): ReLU(sum_k w_k A^k), w_k = sum_ij alpha_ij^k "
                "ReLU(dS/dA_ij^k), alpha = g^2/(2g^2 + sum_ab A_ab^k g^3); 1 forward + 1 backward pass"
            ),
            parameters={**_GRAD, "exp": True},
        ),
        ExplainerSpec(
            name="xgradcam",
            factory="bench_cams.gradient_cams:XGradCAM",
            description=(
                "XGrad-CAM: ReLU(sum_k w_k A^k), w_k = sum_ij A_ij^k/(sum_ab A_ab^k + eps) g_ij^k; "
                "1 forward + 1 backward pass"
            ),
            parameters={**_GRAD, "eps": 1e-7},
        ),
        ExplainerSpec(
            name="layercam",
            factory="bench_cams.gradient_cams:LayerCAM",
            description=(
                "LayerCAM: ReLU(sum_k ReLU(g^k) * A^k), element-wise over positions; "
                "1 forward + 1 backward pass"
            ),
            parameters=dict(_GRAD),
        ),
        ExplainerSpec(
            name="hirescam",
            factory="bench_cams.gradient_cams:HiResCAM",
            description=(
                "HiResCAM: ReLU(sum_k g^k * A^k), element-wise (no averaging of the gradients); "
                "1 forward + 1 backward pass"
            ),
            parameters=dict(_GRAD),
        ),
        ExplainerSpec(
            name="eigencam",
            factory="bench_cams.eigencam:EigenCAM",
            description=(
                "Eigen-CAM: the (h*w, K) activations, mean-centred over positions, projected on "
                "their first principal direction, sign so the map correlates positively with "
                "mean_k A^k; class-agnostic, gradient-free; 1 forward pass"
            ),
            parameters={"layer": None},
        ),
        ExplainerSpec(
            name="scorecam",
            factory="bench_cams.channel_cams:ScoreCAM",
            description=(
                "Score-CAM: ReLU(sum_k w_k A^k), w = softmax_k(p_c(x*M^k) - p_c(baseline)), M^k the "
                "upsampled min-max-normalised channel; K'+1 forward passes per map (K' = all K "
                "channels or max_channels of highest variance; + 1 baseline pass per call), "
                "streamed batch_size at a time"
            ),
            parameters={
                **_GRAD, "softmax": True, "max_channels": None, "baseline": 0.0, "batch_size": 32,
            },
        ),
        ExplainerSpec(
            name="ablationcam",
            factory="bench_cams.channel_cams:AblationCAM",
            description=(
                "Ablation-CAM: ReLU(sum_k w_k A^k), w_k = (y^c - y^c_k)/y^c, y^c_k with channel k "
                "zeroed (every channel, or max_channels of highest variance); 1 forward pass + K "
                "passes of the layers after the feature layer per map"
            ),
            parameters={**_GRAD, "max_channels": None, "batch_size": 128},
        ),
    ]

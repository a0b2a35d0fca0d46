"""What the torch and Keras versions of FCN and DeepLab-v2 share: the docstrings (FCNDoc,
ASPPDoc, DeepLabV2Doc, which the models of both backends take), the layer tables of the
original Caffe definitions, and the argument checks."""

from __future__ import annotations

import math
import numbers

from impls import _checks

FCN_VARIANTS = ("32s", "16s", "8s", "8s-atonce")
# VGG-16 as FCN's Caffe nets name it: (block, [(layer, output channels)]); a 2x2/2 max pool
# with ceil rounding ends each block. conv1_1 pads 100, the other 3x3 convolutions 1.
VGG16 = [(1, [("conv1_1", 64), ("conv1_2", 64)]),
         (2, [("conv2_1", 128), ("conv2_2", 128)]),
         (3, [("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256)]),
         (4, [("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512)]),
         (5, [("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)])]
FIRST_PAD = 100
# Offsets of Caffe's crop layers in the original nets.
FCN_CROPS = {"32s": {"score": 19}, "16s": {"score_pool4c": 5, "score": 27},
             "8s": {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
             "8s-atonce": {"score_pool4c": 5, "score_pool3c": 9, "score": 31}}
# FCN-8s at-once (voc-fcn8s-atonce) scales the pool4 and pool3 skips by these fixed factors
# (Caffe Scale layers with lr_mult 0) before scoring them, which conditions learning all at once.
FCN_ATONCE_SCALES = {"scale_pool4": ("pool4", 512, 0.01), "scale_pool3": ("pool3", 256, 0.0001)}

# DeepLab-v2's ResNet-101: (stage, blocks, bottleneck width, output channels, stride, dilation).
RESNET101 = [(2, 3, 64, 256, 1, 1), (3, 4, 128, 512, 2, 1), (4, 23, 256, 1024, 1, 2), (5, 3, 512, 2048, 1, 4)]
ASPP_RATES = (6, 12, 18, 24)
BATCHNORM_EPSILON = 1e-5  # Caffe's and torch's; Keras' default (1e-3) would change the outputs


class FCNDoc:
    """FCN-32s, FCN-16s, FCN-8s or FCN-8s at-once (Long, Shelhamer & Darrell) on VGG-16, as the
    original Caffe nets define them (voc-fcn32s/16s/8s/8s-atonce of fcn.berkeleyvision.org).

    conv1_1 pads the input by 100 so that any input size survives the five 2x2 max pools,
    which round up (Caffe's and torch's ceil mode; TF has none, so the Keras model pads the
    bottom/right edge with -inf where a size is odd, which is the same); fc6 and fc7 are 7x7
    and 1x1 convolutions (4096 channels) with ReLU and dropout 0.5; score_fr scores the classes.
    Upsampling uses bias-free transposed convolutions initialised with the bilinear kernel
    (BilinearUpsample, padding "valid"), and Caffe's crop layers cut the result back:

    - 32s: upscore 64/32 (fixed), crop 19;
    - 16s: upscore2 4/2 (learnt) + score_pool4 cropped at 5, upscore16 32/16 (fixed), crop 27;
    - 8s: upscore2 4/2 + score_pool4 cropped at 5, upscore_pool4 4/2 + score_pool3 cropped at 9,
      upscore8 16/8 (fixed), crop 31;
    - 8s-atonce: 8s with the skips scaled before they are scored: score_pool4 reads scale_pool4
      (pool4 x 0.01 per channel) and score_pool3 reads scale_pool3 (pool3 x 0.0001), Caffe Scale
      layers held fixed (ChannelScale, trainable=False) as in the authors' net.

    The output has the input's height and width for every input size.

    Args:
        variant: "32s", "16s", "8s" or "8s-atonce".
        num_classes: C (21 for PASCAL VOC).
        **kwargs: layer options: Keras takes its own (name, dtype, trainable, ...), torch only
            name (kept as `.name`).

    Call with images in the framework's layout, torch (N, 3, H, W), Keras (N, H, W, 3), float;
    returns (N, C, H, W) or (N, H, W, C) class scores. `feature_maps(x)` returns every named
    layer's output in order (for localising a port that differs). Layer names are the Caffe
    nets' (conv1_1 ... fc7, score_fr, score_pool4, upscore2, ...), which `impls.port` matches
    (`load_caffemodel` loads the authors' .caffemodel files by them). The fixed upsamplers'
    kernels and the at-once scales are weights too, held fixed (torch requires_grad=False, Keras
    trainable=False); make one trainable to learn it or to load a file whose value differs.
    """


class ASPPDoc:
    """DeepLab-v2's atrous spatial pyramid pooling (ASPP-L): one 3x3 convolution per rate, with
    dilation and padding equal to the rate and a bias, from `in_channels` to `num_classes`; the
    branches' scores are summed. Spatial size is preserved.

    Args:
        in_channels: input channels (2048 on ResNet-101).
        num_classes: C.
        rates: the dilation rates (default 6, 12, 18, 24).
        **kwargs: layer options: Keras takes its own (name, dtype, trainable, ...), torch only
            name (kept as `.name`).

    Layer names: aspp_r{rate} (fc1_c0..c3 in the Caffe net).
    """


class DeepLabV2Doc:
    """DeepLab-v2 (Chen et al., TPAMI 2017): ResNet-101 with atrous convolution (output stride 8),
    ASPP on top, and multi-scale inputs fused by an element-wise max.

    ResNet-101 follows DeepLab's Caffe net: conv1 7x7/2 (pad 3) + BatchNorm + ReLU, 3x3/2 max
    pool (pad 1) rounding up, as the widely used PyTorch ports of DeepLab-v2 do, so that a
    321x321 input gives DeepLab's 41x41 scores; bottleneck blocks with the stride on the first 1x1 convolution
    (res3a), res4 with dilation 2 and res5 with dilation 4 instead of strides; convolutions
    without bias, BatchNorm with epsilon 1e-5 in inference mode (running statistics; the
    Keras model sets epsilon 1e-5 and momentum 1 - torch's momentum so that ported weights give
    the same numbers). Layer names follow the Caffe net (conv1, bn_conv1, res2a_branch2a,
    bn2a_branch2a, ..., res4b22_branch2c).

    Multi-scale: for each scale s the image is resized to ceil(s H) x ceil(s W) (s = 1 uses the
    image as is), run through the network, and its logits resized to the size of the scale-1
    logits; the output is their element-wise max. Resizing is bilinear with half-pixel centres
    (torch `interpolate(align_corners=False)`, TF `image.resize`): Caffe's Interp layer aligns
    corners, but TF 2 has no such resize, and parity between the frameworks comes first.

    Args:
        num_classes: C.
        scales: input scales, the first is the base size (default 1.0, 0.75, 0.5).
        **kwargs: layer options: Keras takes its own (name, dtype, trainable, ...), torch only
            name (kept as `.name`).

    Call with images (N, 3, H, W) torch or (N, H, W, 3) Keras, float; returns the fused logits at
    output stride 8, (N, C, h, w) or its NHWC twin, where h is H after the trunk's three
    roundings up (exactly (H - 1) / 8 + 1 for sizes 8k + 1 such as DeepLab's 321 and 513).
    """


def block_names(stage, blocks):
    """Caffe's block names: res2a, res2b, res2c; res4a, res4b1 ... res4b22 for long stages."""
    if blocks <= 3:
        return [f"{stage}{chr(ord('a') + i)}" for i in range(blocks)]
    return [f"{stage}a"] + [f"{stage}b{i}" for i in range(1, blocks)]


def check_fcn(variant, num_classes):
    _checks.one_of(variant, FCN_VARIANTS, op="FCN", name="variant")
    return variant, _classes(num_classes, op="FCN")


def check_aspp(in_channels, num_classes, rates):
    in_channels = _checks.positive_int(in_channels, op="ASPP", name="in_channels")
    try:
        rates = tuple(_checks.positive_int(r, op="ASPP", name="rates") for r in rates)
    except TypeError:
        raise TypeError(f"ASPP: argument 'rates' must be positive integers, got {rates!r}") from None
    if not rates:
        raise ValueError("ASPP: argument 'rates' must hold at least one rate")
    return in_channels, _classes(num_classes, op="ASPP"), rates


def check_deeplab(num_classes, scales):
    scales = tuple(scales)
    if not scales or not all(isinstance(s, numbers.Real) and 0 < s <= 4 for s in scales):
        raise ValueError(f"DeepLabV2: argument 'scales' must be numbers in (0, 4], got {scales!r}")
    return _classes(num_classes, op="DeepLabV2"), tuple(float(s) for s in scales)


def deeplab_min_size(scales):
    """Smallest input side DeepLab-v2 takes: every scaled input needs at least 2 pixels, so that
    no scale's logits collapse to a single pixel smaller than the max pool's window."""
    return math.ceil(2 / min(scales))


def scaled_size(size, scale):
    return size if scale == 1.0 else max(1, math.ceil(size * scale))


def check_images(shape, dtype_name, *, op, layout, min_size=1):
    _checks.float_batch(shape, dtype_name, op=op, layout=layout, name="images")
    _checks.channel_count(shape[layout.index("C")], 3, op=op, layout=layout, name="images")
    spatial = [shape[layout.index(axis)] for axis in "HW"]
    if any(s is not None and s < min_size for s in spatial):
        raise ValueError(f"{op}: argument 'images' must be at least {min_size}x{min_size}, got "
                         f"{spatial[0]}x{spatial[1]}")


def _classes(num_classes, *, op):
    return _checks.positive_int(num_classes, op=op, name="num_classes")


# crfasrnn_keras's network (its get_crfrnn_model_def: FCN-8s on VGG-16, then CRF-as-RNN), by
# the Keras 2 layer names its weight file uses: (layer, kind, [(weight, shape in the Keras
# layout)]), in the order of the network. Convolution kernels are HWIO, transposed convolution
# kernels HWOI (Keras' Conv2DTranspose), the CRF's matrices (C, C).
CRFASRNN_CLASSES = 21
CRFASRNN_THETAS = dict(theta_alpha=160.0, theta_beta=3.0, theta_gamma=3.0)
CRFASRNN_ITERATIONS = 10
# Offsets of its Cropping2D layers (score-pool4: 5, score-pool3: 9, the output: 31 at the top
# and left; the bottom/right crops of a 500x500 input, 5, 9 and 37, follow from the sizes).
CRFASRNN_CROPS = {"score-pool4": 5, "score-pool3": 9, "upsample": 31}
CRFASRNN_WEIGHT_NAMES = ("spatial_ker_weights", "bilateral_ker_weights", "compatibility_matrix")


def crfasrnn_layers(num_classes: int = CRFASRNN_CLASSES) -> list[tuple[str, str, list[tuple[str, tuple]]]]:
    """[(layer, kind, [(weight, Keras shape)])] of crfasrnn_keras's network, weighted layers only."""
    c = num_classes
    layers, channels = [], 3
    for _, block in VGG16:
        for name, width in block:
            layers.append((name, "convolution", [("kernel", (3, 3, channels, width)), ("bias", (width,))]))
            channels = width
    layers += [
        ("fc6", "convolution", [("kernel", (7, 7, 512, 4096)), ("bias", (4096,))]),
        ("fc7", "convolution", [("kernel", (1, 1, 4096, 4096)), ("bias", (4096,))]),
        ("score-fr", "convolution", [("kernel", (1, 1, 4096, c)), ("bias", (c,))]),
        ("score2", "transposed convolution", [("kernel", (4, 4, c, c)), ("bias", (c,))]),
        ("score-pool4", "convolution", [("kernel", (1, 1, 512, c)), ("bias", (c,))]),
        ("score4", "transposed convolution", [("kernel", (4, 4, c, c))]),
        ("score-pool3", "convolution", [("kernel", (1, 1, 256, c)), ("bias", (c,))]),
        ("upsample", "transposed convolution", [("kernel", (16, 16, c, c))]),
        ("crfrnn", "CrfRnn", [(name, (c, c)) for name in CRFASRNN_WEIGHT_NAMES]),
    ]
    return layers


class CrfRnnNetDoc:
    """crfasrnn_keras's whole network (its get_crfrnn_model_def): FCN-8s on VGG-16 with
    CRF-as-RNN on top (Zheng et al., ICCV 2015), for any batch and input size.

    The layers follow the Keras original: zero padding 100, conv1_1 3x3 "valid" and the other
    3x3 convolutions "same", all with ReLU; pool1 2x2/2 rounding down, pool2-pool5 2x2/2
    rounding up (Keras "same"); fc6 7x7 and fc7 1x1 (4096 channels, ReLU, dropout 0.5, active
    only in training); score-fr 1x1; score2 a 4x4/2 transposed convolution with bias, plus
    score-pool4 (1x1 on pool4) cropped at offset 5; score4 4x4/2 without bias, plus score-pool3
    (1x1 on pool3) cropped at offset 9; upsample 16x16/8 without bias, cropped at offset 31 to
    the input's height and width. The original's fixed Cropping2D sizes (5, 9 and (31, 37) for
    500x500 inputs) are computed from the input size instead (`crfasrnn_crops`), so every size
    from 1x1 up works. Finally CrfRnn (the framework's own, named "crfrnn") refines the scores,
    fed the network's input itself as its image, as the original does: the pre-processed,
    mean-subtracted BGR image. Every image of a batch is refined (the original used image 0).

    Initial weights as crfasrnn_keras's: Keras' defaults for the convolutions (torch's own
    in the torch model), the bilinear kernel for the transposed convolutions (bias 0), and the
    CRF's matrices I, I and -I (not CrfRnn's 3 I, 5 I).

    Args:
        num_classes: C (21 for PASCAL VOC).
        theta_alpha, theta_beta, theta_gamma: the CRF's kernel widths (CrfRnn's).
        iterations: the CRF's mean-field steps.
        pool1: "floor" (crfasrnn_keras's "valid" pool1) or "ceil" (the Caffe original's,
            torrvision/crfasrnn, whose pools all round up: its FCN-8s is voc-fcn8s's). The two
            differ only where the padded input's side, H + 198, is odd (never at 500x500). Its
            .caffemodel loads with impls.port.load_caffemodel(net, path, rename={"inference1":
            "crfrnn"}).
        **kwargs: layer options: Keras takes its own (name, dtype, trainable, ...), torch only
            name (kept as `.name`).

    Call with images in the framework's layout, torch (N, 3, H, W), Keras (N, H, W, 3), float;
    returns the CRF's logits, (N, C, H, W) or (N, H, W, C). `feature_maps(x)` returns every
    named layer's output in order (conv1_1 ... pool5, fc6, fc7, score-fr, score2, score-pool4,
    score4, score-pool3, upsample (cropped), crfrnn), for localising a port that differs.
    Layer names are the Keras 2 original's (`crfasrnn_layers`), which its weight file uses.
    """


POOL1_ROUNDING = ("floor", "ceil")


def check_crfrnn_net(num_classes, theta_alpha, theta_beta, theta_gamma, iterations) -> dict:
    """CrfRnn's checked configuration, its messages naming CrfRnnNet."""
    from impls import _crfrnn  # not at the top: the FCN/DeepLab models do not need it

    try:
        return _crfrnn.check_config(num_classes, theta_alpha, theta_beta, theta_gamma, iterations)
    except (TypeError, ValueError) as error:
        raise type(error)(str(error).replace("CrfRnn:", "CrfRnnNet:", 1)) from None


def crfasrnn_crops(height: int, width: int, pool1: str = "floor") -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """{layer: ((top, bottom), (left, right))} of crfasrnn_keras's three crops for an input of
    height x width: the layer's output is cut to the size of the map it is added to (score2,
    score4) or of the input (upsample); the top/left offsets are the original's fixed ones. For
    500x500 this gives the original's Cropping2D numbers, (5, 5), (9, 9) and (31, 37). `pool1`
    "ceil" gives the Caffe original's (its pool1 rounds up)."""
    _checks.one_of(pool1, POOL1_ROUNDING, op="crfasrnn_crops", name="pool1")
    sides = [_crfasrnn_side_crops(_checks.positive_int(size, op="crfasrnn_crops", name=name), pool1 == "ceil")
             for name, size in (("height", height), ("width", width))]
    return {layer: (sides[0][layer], sides[1][layer]) for layer in CRFASRNN_CROPS}


def _crfasrnn_side_crops(size, pool1_ceil):
    """{layer: (before, after)} along one spatial axis of `size` pixels."""
    convolved = size + 2 * FIRST_PAD - 2  # conv1_1 "valid" (-2) after the padding
    pooled = [-(-convolved // 2) if pool1_ceil else convolved // 2]  # pool1 2x2/2
    for _ in range(4):
        pooled.append(-(-pooled[-1] // 2))  # pool2-pool5, Keras "same": rounding up
    _, _, pool3, pool4, pool5 = pooled
    score2 = 2 * (pool5 - 6) + 2  # fc6 7x7 "valid", then a 4x4/2 transposed convolution
    score4 = 2 * score2 + 2
    upsample = 8 * score4 + 8  # 16x16/8
    kept = {"score-pool4": (pool4, score2), "score-pool3": (pool3, score4), "upsample": (upsample, size)}
    return {layer: (CRFASRNN_CROPS[layer], total - CRFASRNN_CROPS[layer] - target)
            for layer, (total, target) in kept.items()}

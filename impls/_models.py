"""What the torch and Keras versions of FCN and DeepLab-v2 share: the docstrings (FCNDoc,
ASPPDoc, DeepLabV2Doc, which the models of both backends take), the layer tables of the
original Caffe definitions, and the argument checks."""

from __future__ import annotations

import fractions
import math
import numbers
import typing

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

class LargeFOVBlock(typing.NamedTuple):
    """One block of DeepLab-LargeFOV's VGG-16: its 3x3 convolutions [(name, channels)], their
    dilation (and pad), and the 3x3 max pool after them (pad 1, rounding up) with its stride."""

    layers: list
    dilation: int
    pool: str
    stride: int


LARGEFOV_VGG16 = [LargeFOVBlock([("conv1_1", 64), ("conv1_2", 64)], 1, "pool1", 2),
                  LargeFOVBlock([("conv2_1", 128), ("conv2_2", 128)], 1, "pool2", 2),
                  LargeFOVBlock([("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256)], 1, "pool3", 2),
                  LargeFOVBlock([("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512)], 1, "pool4", 1),
                  LargeFOVBlock([("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)], 2, "pool5", 1)]
LARGEFOV_SCORE = "fc8_voc12"

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

    Layer names are the Caffe net's (and DrSleep's TensorFlow port's): fc1_voc12_c0 ... c3, one per
    rate in order. (The torch module loads a state_dict of the older names, aspp_r{rate}.)
    """


class DeepLabV2Doc:
    """DeepLab-v2 (Chen et al., TPAMI 2017): ResNet-101 with atrous convolution (output stride 8),
    ASPP on top, and multi-scale inputs fused by an element-wise max.

    ResNet-101 follows DeepLab's Caffe net: conv1 7x7/2 (pad 3) + BatchNorm + ReLU, 3x3/2 max
    pool (pad 1) rounding up, so that a 321x321 input gives DeepLab's 41x41 scores; bottleneck
    blocks with the stride on the first 1x1 convolution (res3a), res4 with dilation 2 and res5
    with dilation 4 instead of strides; convolutions without bias, BatchNorm in inference mode
    (running statistics); ASPP's branches fc1_voc12_c0 ... c3 summed into fc1_voc12. Layer names
    follow the Caffe net (conv1, bn_conv1, res2a_branch2a, bn2a_branch2a, ..., res4b22_branch2c,
    fc1_voc12_c0), which impls.port's loaders match (the Caffe BatchNorm + Scale pairs load into
    one BatchNorm layer).

    Multi-scale: each scale s after the first is the image resized, run through the same network,
    and its logits resized to the first scale's logits' size; the output is their element-wise
    max. How the authors' model and DrSleep's TensorFlow port resize differ, and each file
    reproduces its users' outputs only with its own (`resize`):

    - "caffe" (the authors' test prototxt, the default): Caffe's Interp, bilinear with aligned
      corners; a scale z / s (0.75 = 3 / 4) gives (H - 1) // s * z + 1 pixels (Interp's shrink
      before zoom: 513 gives 385 and 257);
    - "tf1" (DrSleep's evaluate_msc.py): int(s H) pixels and TF1's resize_images (bilinear, source
      = destination x in / out, no half pixel, no aligned corners);
    - "half_pixel": ceil(s H) pixels, half-pixel centres (torch interpolate(align_corners=False),
      TF 2's image.resize): this model's resizing before it followed a source.

    `padding` "caffe" pads conv1 by 3 and pool1 by 1 on every side, as Caffe; "same" is TF's
    "SAME" of DrSleep's port (more on the bottom and right where the size is even; equal to
    Caffe's for sizes 8k + 1 such as 321 and 513). `batchnorm_epsilon`: Caffe's 1e-5, or slim's
    1e-3 that DrSleep's port ran with. All three are attributes that may be set after
    construction; impls.port.load_tf_checkpoint sets DrSleep's and reports it.

    Args:
        num_classes: C.
        scales: input scales, the first is the base size (default 1.0, 0.75, 0.5).
        resize: "caffe", "tf1" or "half_pixel" (above).
        batchnorm_epsilon: BatchNorm's epsilon (default 1e-5, Caffe's).
        padding: "caffe" or "same" (above).
        **kwargs: layer options: Keras takes its own (name, dtype, trainable, ...), torch only
            name (kept as `.name`).

    Call with images (N, 3, H, W) torch or (N, H, W, 3) Keras, float; returns the fused logits at
    output stride 8, (N, C, h, w) or its NHWC twin, where h is H after the trunk's three
    roundings up (exactly (H - 1) / 8 + 1 for sizes 8k + 1 such as DeepLab's 321 and 513).
    `feature_maps(x)` returns the first scale's trunk outputs, each scale's logits at the fused size
    ("fc1_voc12@1.0", ...) and "fused".
    """


class DeepLabLargeFOVDoc:
    """DeepLab-LargeFOV (Chen et al., ICLR 2015; the VGG-16 model of the DeepLab-v2 release): VGG-16
    with output stride 8 and a large field of view, as its Caffe deploy net defines it.

    conv1_1 ... conv5_3 (3x3, pad 1, ReLU) with 3x3 max pools rounding up: pool1-pool3 stride 2
    pad 1, pool4 stride 1 pad 1; conv5_x dilated by 2 (pad 2), pool5 3x3 stride 1 pad 1; pool5a, a
    3x3 average pool, stride 1, pad 1, whose divisor counts the padding (always 9, as Caffe); fc6,
    3x3 dilated by 12 (pad 12) to 1024 channels, ReLU and dropout; fc7, 1x1 to 1024, ReLU and
    dropout (active only in training); fc8_voc12, 1x1 to the classes. A 513x513 input gives 65x65
    logits, (H - 1) / 8 + 1 for sizes 8k + 1. Layer names are the Caffe net's, which
    impls.port.load_caffemodel matches.

    Args:
        num_classes: C (21 for PASCAL VOC).
        **kwargs: layer options: Keras takes its own (name, dtype, trainable, ...), torch only
            name (kept as `.name`).

    Call with images (N, 3, H, W) torch or (N, H, W, 3) Keras, float (the authors' input: BGR, the
    mean subtracted); returns the logits fc8_voc12, (N, C, h, w) or its NHWC twin.
    `feature_maps(x)` returns every named layer's output in order.
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


DEEPLAB_RESIZES = ("caffe", "tf1", "half_pixel")
DEEPLAB_PADDINGS = ("caffe", "same")
ASPP_OLD_NAME = "aspp_r{rate}"  # the torch module's names before they were the Caffe net's


def aspp_names(rates) -> list[str]:
    """The Caffe net's names of ASPP's branches, one per rate in order."""
    return [f"fc1_voc12_c{index}" for index in range(len(rates))]


def check_deeplab(num_classes, scales):
    scales = tuple(scales)
    if not scales or not all(isinstance(s, numbers.Real) and 0 < s <= 4 for s in scales):
        raise ValueError(f"DeepLabV2: argument 'scales' must be numbers in (0, 4], got {scales!r}")
    return _classes(num_classes, op="DeepLabV2"), tuple(float(s) for s in scales)


def check_deeplab_resize(resize):
    return _checks.one_of(resize, DEEPLAB_RESIZES, op="DeepLabV2", name="resize")


def check_deeplab_padding(padding):
    return _checks.one_of(padding, DEEPLAB_PADDINGS, op="DeepLabV2", name="padding")


def check_batchnorm_epsilon(epsilon, *, op="DeepLabV2"):
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not 0 < epsilon < 1:
        raise ValueError(f"{op}: argument 'batchnorm_epsilon' must be a number in (0, 1), got {epsilon!r}")
    return float(epsilon)


def check_largefov(num_classes):
    return _classes(num_classes, op="DeepLabLargeFOV")


def deeplab_min_size(scales):
    """Smallest input side DeepLab-v2 takes: every scaled input needs at least 2 pixels, so that
    no scale's logits collapse to a single pixel smaller than the max pool's window."""
    return math.ceil(2 / min(scales))


def scaled_size(size, scale, resize="half_pixel"):
    """The side of a scaled input: Caffe's Interp with the scale as zoom / shrink ("caffe"),
    int(s H) ("tf1"), ceil(s H) ("half_pixel"); the size itself at scale 1."""
    if scale == 1.0:
        return size
    if resize == "caffe":
        fraction = fractions.Fraction(scale).limit_denominator(64)
        return max(1, (size - 1) // fraction.denominator * fraction.numerator + 1)
    if resize == "tf1":
        return max(1, int(size * scale))
    return max(1, math.ceil(size * scale))


def same_padding(size, kernel, stride):
    """(before, after) of TF's "SAME" along one axis: the output ceil(size / stride), the padding
    split with the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


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

"""Caffe's layers on torch, one class per layer type, with Caffe's semantics (BVLC Caffe's
src/caffe/layers/*.cpp, and the CRF-RNN fork's Crop and MultiStageMeanfield). Blobs are NCHW, as
Caffe's and torch's; parameters keep Caffe's layouts, which are torch's (a Convolution's weights
(out, in/group, kh, kw), a Deconvolution's (in, out/group, kh, kw)).

Each layer is built once from its definition and its bottoms' shapes (which fix its parameters'
shapes, as Caffe's LayerSetUp), then `forward(bottoms, params)` maps torch tensors to its tops on
any device; `coord_map()` gives the affine map from a bottom's pixel coordinates to its top's, from
which the CRF-RNN fork's Crop derives its offsets."""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from impls.caffe import _winograd
from impls.caffe._definition import TEST, LayerDef
from impls.port.prototxt import Message

FLT_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """A parameter blob: its shape and the values Caffe's filler gives it when no file sets it."""

    shape: tuple
    filler: Message | None = None
    initial: np.ndarray | None = None  # a layer's own initial values (MultiStageMeanfield's)


class Layer:
    """What every layer shares: its definition, checks of its bottoms and tops, and the parameter
    blobs it has (`params`, [ParamSpec])."""

    type = ""
    bottoms = (1, 1)  # (at least, at most) bottoms; None: no bound
    tops = (1, 1)
    identity_coordinates = False  # a layer that keeps pixel coordinates (ReLU, Eltwise, ...)
    may_overwrite = False  # set by the net per call: an in-place layer may write into its bottom

    def __init__(self, definition: LayerDef, bottom_shapes: list[tuple], phase: int):
        self.definition, self.name, self.phase = definition, definition.name, phase
        self._check_counts(bottom_shapes)
        self.params: list[ParamSpec] = []
        self.setup(definition.params, bottom_shapes)

    def setup(self, params: Message, bottom_shapes):
        pass

    def _check_counts(self, bottom_shapes):
        for what, (low, high), count in (("bottom", self.bottoms, len(bottom_shapes)),
                                         ("top", self.tops, len(self.definition.tops))):
            if count < low or (high is not None and count > high):
                expected = f"{low}" if low == high else f"{low} to {high}" if high is not None else f"at least {low}"
                raise self.error(f"takes {expected} {what}(s), got {count}")

    def error(self, why: str) -> ValueError:
        return ValueError(f"{self.definition.where}: layer {self.name!r} ({self.type}): {why}")

    def forward(self, bottoms: list[torch.Tensor], params: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def prepare(self, index: int, param: torch.Tensor) -> torch.Tensor:
        """The layout `forward` takes parameter `index` in (the net keeps it until the blob changes)."""
        return param

    def top_shapes(self, bottom_shapes: list[tuple]) -> list[tuple]:
        """The tops' shapes, from running the layer on tensors without data (the meta device)."""
        bottoms = [torch.empty(shape, device="meta") for shape in bottom_shapes]
        params = [torch.empty(spec.shape, device="meta") for spec in self.params]
        return [tuple(top.shape) for top in self.forward(bottoms, params)]

    def coord_map(self):
        """[(a, b)] per spatial axis: a top's coordinate is a * the bottom's + b; None where the layer
        has none (a crop cannot be aligned through it)."""
        return [(1.0, 0.0), (1.0, 0.0)] if self.identity_coordinates else None


# ---- Parameters of the convolution and pooling layers ------------------------------------------

def _pair(params: Message, name: str, default: int | None, layer: Layer, *, repeated: bool = True) -> tuple[int, int]:
    """(h, w) of a spatial parameter: `name` (one value for both, or one per axis) or its `_h` and
    `_w` forms (kernel_h and kernel_w for kernel_size; Caffe's two forms, never both)."""
    values = params.ints(name, minimum=0) if repeated else ([params.int(name, minimum=0)] if name in params else [])
    stem = "kernel" if name == "kernel_size" else name
    separate = [f"{stem}_h" in params, f"{stem}_w" in params]
    if any(separate):
        if values:
            raise layer.error(f"gives both {name} and {stem}_h/{stem}_w")
        if not all(separate):
            raise layer.error(f"gives only one of {stem}_h and {stem}_w")
        return params.int(f"{stem}_h", minimum=0), params.int(f"{stem}_w", minimum=0)
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    if not values and default is not None:
        return default, default
    raise layer.error(f"needs {name} (one value, or one per spatial axis), got {values or 'none'}")


def _four_d(layer: Layer, shape, what="bottom"):
    if len(shape) != 4:
        raise layer.error(f"takes a 4-D (N, C, H, W) {what}, got shape {tuple(shape)}")


class _Convolutions(Layer):
    """Convolution and Deconvolution: pairs of bottoms and tops sharing the weights."""

    bottoms = (1, None)
    tops = (1, None)

    def setup(self, params, bottom_shapes):
        if len(self.definition.tops) != len(bottom_shapes):
            raise self.error(f"has {len(bottom_shapes)} bottom(s) and {len(self.definition.tops)} top(s): they pair")
        conv = params.message("convolution_param")
        if conv.int("axis", 1) != 1:
            raise self.error("convolves over axis 1 only (channels first, as every 2-D net)")
        self.kernel = _pair(conv, "kernel_size", None, self)
        self.stride = _pair(conv, "stride", 1, self)
        self.pad = _pair(conv, "pad", 0, self)
        self.dilation = _pair(conv, "dilation", 1, self)
        self.group = conv.int("group", 1, minimum=1)
        outputs = conv.int("num_output", 0, minimum=1) if "num_output" in conv else None
        if outputs is None:
            raise self.error("needs convolution_param.num_output")
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise self.error(f"needs kernel, stride and dilation of at least 1, got {self.kernel}, {self.stride}, "
                             f"{self.dilation}")
        for shape in bottom_shapes:
            _four_d(self, shape)
        channels = bottom_shapes[0][1]
        if channels % self.group or outputs % self.group:
            raise self.error(f"has group {self.group}, which must divide its {channels} input and {outputs} output "
                             f"channels")
        if any(shape[1] != channels for shape in bottom_shapes):
            raise self.error(f"takes bottoms with the same channels, got {[s[1] for s in bottom_shapes]}")
        self.params = [ParamSpec(self.weight_shape(channels, outputs), conv.message("weight_filler"))]
        if conv.bool("bias_term", True):
            self.params.append(ParamSpec((outputs,), conv.message("bias_filler")))
        self.winograd = self.type == "Convolution" and _winograd.applies(
            self.kernel, self.stride, self.dilation, self.group, channels, outputs)

    def _effective_kernel(self):
        return [d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation, strict=True)]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """oneDNN's convolutions and torch's pooling run fastest on channels-last (NHWC) memory; the
    tensor keeps its NCHW shape (blobs' arrays are NCHW views of it)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class Convolution(_Convolutions):
    """A convolution: oneDNN's on channels-last memory; on the CPU, Winograd's F(4x4, 3x3) for 3x3
    convolutions with many channels (impls.caffe._winograd; `winograd` False turns it off); and for
    1x1 kernels and kernels larger than 3x3 without groups (FCN's fc6 7x7, fc7 and score layers
    1x1), one matrix product of the weights with the (unfolded) input, which avoids reordering a
    large weight on every call (measured at 500x500: fc6 487 ms to 328 ms, fc7 88 ms to 65 ms)."""

    type = "Convolution"

    def weight_shape(self, channels, outputs):
        return (outputs, channels // self.group, *self.kernel)

    @property
    def _as_matrix_product(self):
        area = self.kernel[0] * self.kernel[1]
        return self.group == 1 and (area > 9 or (area == 1 and self.pad == (0, 0) and self.stride == (1, 1)))

    def prepare(self, index, param):
        if index != 0:
            return param
        if self.winograd and param.device.type == "cpu":
            return _winograd.transform_weights(param)  # (36, C, K): forward tells it by its rank
        return param.reshape(param.shape[0], -1) if self._as_matrix_product else channels_last(param)

    def forward(self, bottoms, params):
        bias = params[1] if len(params) > 1 else None
        if params[0].dim() == 3:
            return [_winograd.convolve(x, params[0], bias, self.pad) for x in bottoms]
        if self._as_matrix_product:
            return [self._matrix_product(x, params[0], bias) for x in bottoms]
        return [F.conv2d(channels_last(x), params[0], bias, self.stride, self.pad, self.dilation, self.group)
                for x in bottoms]

    def _matrix_product(self, x, weight, bias):
        batch, _, height, width = x.shape
        out_h, out_w = ((size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in
                        zip((height, width), self.pad, self.dilation, self.kernel, self.stride, strict=True))
        weight = weight.reshape(weight.shape[0], -1)
        if self.kernel == (1, 1):
            columns = x.reshape(batch, x.shape[1], height * width)
        else:
            columns = F.unfold(x, self.kernel, self.dilation, self.pad, self.stride)  # (N, C kh kw, L)
        out = torch.matmul(weight, columns)
        if bias is not None:
            out = out + bias[:, None]
        return out.reshape(batch, weight.shape[0], out_h, out_w)

    def coord_map(self):
        return [(1.0 / s, (p - (k - 1) / 2) / s) for k, s, p in zip(self._effective_kernel(), self.stride, self.pad,
                                                                     strict=True)]


class Deconvolution(_Convolutions):
    type = "Deconvolution"

    def weight_shape(self, channels, outputs):
        return (channels, outputs // self.group, *self.kernel)

    def forward(self, bottoms, params):
        bias = params[1] if len(params) > 1 else None
        return [F.conv_transpose2d(x, params[0], bias, self.stride, self.pad, 0, self.group, self.dilation)
                for x in bottoms]

    def coord_map(self):
        return [(float(s), (k - 1) / 2 - p) for k, s, p in zip(self._effective_kernel(), self.stride, self.pad,
                                                                strict=True)]


POOL_METHODS = ("MAX", "AVE", "STOCHASTIC")
ROUND_MODES = ("CEIL", "FLOOR")


class Pooling(Layer):
    type = "Pooling"
    tops = (1, 2)

    def setup(self, params, bottom_shapes):
        pool = params.message("pooling_param")
        self.method = pool.enum("pool", POOL_METHODS, "MAX")
        if self.method == "STOCHASTIC":
            raise self.error("STOCHASTIC pooling is not implemented (MAX and AVE are)")
        if len(self.definition.tops) == 2 and self.method != "MAX":
            raise self.error("has a second top (the argmax mask), which only MAX pooling gives")
        if len(self.definition.tops) == 2:
            raise self.error("the MAX pooling mask top is not implemented")
        _four_d(self, bottom_shapes[0])
        self.global_pooling = pool.bool("global_pooling", False)
        self.round_mode = pool.enum("round_mode", ROUND_MODES, "CEIL")
        if self.global_pooling:
            self.kernel, self.pad, self.stride = None, (0, 0), (1, 1)
            if "kernel_size" in pool or "kernel_h" in pool:
                raise self.error("gives a kernel size with global_pooling")
        else:
            self.kernel = _pair(pool, "kernel_size", None, self, repeated=False)
            self.pad = _pair(pool, "pad", 0, self, repeated=False)
            self.stride = _pair(pool, "stride", 1, self, repeated=False)
            if min(self.kernel) < 1 or min(self.stride) < 1:
                raise self.error(f"needs kernel and stride of at least 1, got {self.kernel} and {self.stride}")
            if any(p >= k for p, k in zip(self.pad, self.kernel, strict=True)):
                raise self.error(f"has pad {self.pad}, which must be smaller than its kernel {self.kernel}")

    def _geometry(self, height, width):
        kernel = (height, width) if self.global_pooling else self.kernel
        return kernel, self.stride, self.pad

    def output_size(self, size, kernel, stride, pad):
        """Caffe's pooled size: rounded up (or down with round_mode FLOOR), then one less when the
        last window would start in the bottom/right padding (only with a pad)."""
        span = (size + 2 * pad - kernel) / stride
        pooled = (math.ceil(span) if self.round_mode == "CEIL" else math.floor(span)) + 1
        if pad and (pooled - 1) * stride >= size + pad:
            pooled -= 1
        return max(pooled, 0)

    def forward(self, bottoms, params):
        x = bottoms[0]
        kernel, stride, pad = self._geometry(*x.shape[2:])
        pooled = [self.output_size(size, k, s, p) for size, k, s, p in zip(x.shape[2:], kernel, stride, pad,
                                                                             strict=True)]
        x = channels_last(x)
        if self._torch_agrees(x.shape[2:], pooled, kernel, stride, pad):
            if self.method == "MAX":  # Caffe's max starts at -FLT_MAX: an all -inf window gives it
                return [F.max_pool2d(x, kernel, stride, pad, ceil_mode=True).clamp(min=-FLT_MAX)]
            return [F.avg_pool2d(x, kernel, stride, pad, ceil_mode=True, count_include_pad=True)]
        return [self._explicit(x, pooled, kernel, stride, pad)]

    @staticmethod
    def _torch_agrees(sizes, pooled, kernel, stride, pad):
        """Whether torch's ceil-mode pooling has Caffe's windows: the same count (torch always
        applies the last-window rule, Caffe only with a pad) and a pad of at most half the kernel."""
        for size, count, k, s, p in zip(sizes, pooled, kernel, stride, pad, strict=True):
            torch_count = -(-(size + 2 * p - k) // s) + 1
            if (torch_count - 1) * s >= size + p:
                torch_count -= 1
            if torch_count != count or 2 * p > k:
                return False
        return True

    def _explicit(self, x, pooled, kernel, stride, pad):
        """Caffe's windows where torch's differ: the input padded by hand (MAX: -FLT_MAX; AVE: zeros,
        with Caffe's divisor, which counts the pad up to size + pad but not beyond)."""
        extra = [max(0, (n - 1) * s + k - size - p) for n, s, k, size, p in zip(pooled, stride, kernel, x.shape[2:],
                                                                                  pad, strict=True)]
        value = -FLT_MAX if self.method == "MAX" else 0.0
        padded = F.pad(x, (pad[1], extra[1], pad[0], extra[0]), value=value)
        if self.method == "MAX":
            out = F.max_pool2d(padded, kernel, stride).clamp(min=-FLT_MAX)
        else:
            out = F.avg_pool2d(padded, kernel, stride, divisor_override=1)
            areas = [torch.tensor([min(i * s - p + k, size + p) - (i * s - p) for i in range(n)], dtype=x.dtype,
                                  device=x.device)
                     for n, s, p, k, size in zip(pooled, stride, pad, kernel, x.shape[2:], strict=True)]
            out = out[:, :, :pooled[0], :pooled[1]] / (areas[0][:, None] * areas[1][None, :])
        return out[:, :, :pooled[0], :pooled[1]]

    def coord_map(self):
        if self.global_pooling:
            return None
        return [(1.0 / s, (p - (k - 1) / 2) / s) for k, s, p in zip(self.kernel, self.stride, self.pad, strict=True)]


class ReLU(Layer):
    type = "ReLU"
    identity_coordinates = True

    def setup(self, params, bottom_shapes):
        self.slope = params.message("relu_param").float("negative_slope", 0.0)
        self.in_place = self.definition.tops == self.definition.bottoms

    def forward(self, bottoms, params):
        x = bottoms[0]
        in_place = self.in_place and self.may_overwrite and x.device.type != "meta"
        if self.slope:
            return [F.leaky_relu(x, self.slope, inplace=in_place)]
        return [F.relu(x, inplace=in_place)]


class Dropout(Layer):
    """Identity at TEST (Caffe scales at training time, by 1 / (1 - ratio))."""

    type = "Dropout"
    identity_coordinates = True

    def setup(self, params, bottom_shapes):
        self.ratio = params.message("dropout_param").float("dropout_ratio", 0.5)
        if not 0 <= self.ratio < 1:
            raise self.error(f"has dropout_ratio {self.ratio}, which must be in [0, 1)")

    def forward(self, bottoms, params):
        if self.phase == TEST or self.ratio == 0:
            return [bottoms[0]]
        return [F.dropout(bottoms[0], self.ratio, training=True)]


class Crop(Layer):
    """Crops bottom 0 to bottom 1's size from `axis` on, at `offset` (one for every such axis, or one
    each). A Crop without crop_param is the CRF-RNN fork's: its offsets are derived from the layers'
    coordinate maps (set by the net, `automatic`); BVLC Caffe would crop at offset 0."""

    type = "Crop"
    bottoms = (2, 2)

    def setup(self, params, bottom_shapes):
        self.automatic = "crop_param" not in params
        crop = params.message("crop_param")
        rank = len(bottom_shapes[0])
        axis = crop.int("axis", 2)
        self.axis = axis + rank if axis < 0 else axis
        if not 0 <= self.axis < rank or len(bottom_shapes[1]) != rank:
            raise self.error(f"crops from axis {axis} bottoms of shapes {bottom_shapes[0]} and {bottom_shapes[1]}")
        offsets = crop.ints("offset", minimum=0)
        axes = rank - self.axis
        if len(offsets) not in (0, 1, axes):
            raise self.error(f"gives {len(offsets)} offsets for {axes} axes (give 1, or one per axis)")
        self.offsets = tuple(offsets * axes if len(offsets) == 1 else offsets or [0] * axes)

    def set_automatic_offsets(self, offsets):
        self.offsets = tuple(offsets)

    def forward(self, bottoms, params):
        x, like = bottoms
        index = [slice(None)] * x.dim()
        for axis in range(self.axis, x.dim()):
            offset, size = self.offsets[axis - self.axis], like.shape[axis]
            if offset + size > x.shape[axis]:
                raise self.error(f"crops {size} from axis {axis} at offset {offset}, but bottom 0 has only "
                                 f"{x.shape[axis]} there (shapes {tuple(x.shape)} and {tuple(like.shape)})")
            index[axis] = slice(offset, offset + size)
        return [x[tuple(index)].contiguous()]

    def coord_map(self):
        if self.axis > 2:
            return None
        return [(1.0, -float(offset)) for offset in self.offsets[-2:]]


ELTWISE_OPERATIONS = ("PROD", "SUM", "MAX")


class Eltwise(Layer):
    type = "Eltwise"
    bottoms = (2, None)
    identity_coordinates = True

    def setup(self, params, bottom_shapes):
        eltwise = params.message("eltwise_param")
        self.operation = eltwise.enum("operation", ELTWISE_OPERATIONS, "SUM")
        self.coefficients = eltwise.floats("coeff")
        if self.coefficients and (self.operation != "SUM" or len(self.coefficients) != len(bottom_shapes)):
            raise self.error(f"has {len(self.coefficients)} coeff(s): only SUM takes them, one per bottom "
                             f"({len(bottom_shapes)})")
        if any(tuple(shape) != tuple(bottom_shapes[0]) for shape in bottom_shapes):
            raise self.error(f"takes bottoms of one shape, got {[tuple(s) for s in bottom_shapes]}")

    def forward(self, bottoms, params):
        if self.operation == "PROD":
            out = bottoms[0] * bottoms[1]
            for x in bottoms[2:]:
                out = out * x
        elif self.operation == "MAX":
            out = torch.maximum(bottoms[0], bottoms[1])
            for x in bottoms[2:]:
                out = torch.maximum(out, x)
        else:
            coefficients = self.coefficients or [1.0] * len(bottoms)
            out = bottoms[0] * coefficients[0] if coefficients[0] != 1 else bottoms[0].clone()
            for x, c in zip(bottoms[1:], coefficients[1:], strict=True):
                out = out.add_(x, alpha=c)
        return [out]


class BatchNorm(Layer):
    """Caffe's BatchNorm: blobs mean, variance and the moving-average factor (1,); the statistics in
    use are the blobs divided by the factor (0 where the factor is 0). TEST (use_global_stats)
    normalises with them; TRAIN with the batch's, updating the blobs as Caffe does."""

    type = "BatchNorm"
    identity_coordinates = True

    def setup(self, params, bottom_shapes):
        norm = params.message("batch_norm_param")
        self.global_stats = norm.bool("use_global_stats", self.phase == TEST)
        self.fraction = norm.float("moving_average_fraction", 0.999)
        self.eps = norm.float("eps", 1e-5)
        if len(bottom_shapes[0]) < 2:
            raise self.error(f"takes (N, C, ...) bottoms, got shape {tuple(bottom_shapes[0])}")
        channels = bottom_shapes[0][1]
        zero = Message()
        self.params = [ParamSpec((channels,), zero), ParamSpec((channels,), zero), ParamSpec((1,), zero)]

    def forward(self, bottoms, params):
        x = bottoms[0]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean, variance, factor = params
        if self.global_stats:
            scale = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
            mean, variance = mean * scale, variance * scale
        else:
            axes = [0, *range(2, x.dim())]
            batch_mean = x.mean(axes)
            batch_variance = ((x - batch_mean.reshape(shape)) ** 2).mean(axes)
            if x.device.type != "meta":
                self._update(params, batch_mean, batch_variance, x.numel() // x.shape[1])
            mean, variance = batch_mean, batch_variance
        return [(x - mean.reshape(shape)) / torch.sqrt(variance.reshape(shape) + self.eps)]

    def _update(self, params, mean, variance, count):
        blob_mean, blob_variance, factor = params
        correction = count / (count - 1) if count > 1 else 1.0
        with torch.no_grad():
            factor.mul_(self.fraction).add_(1)
            blob_mean.mul_(self.fraction).add_(mean)
            blob_variance.mul_(self.fraction).add_(variance * correction)


class Scale(Layer):
    """Caffe's Scale: bottom 0 times a scale over `num_axes` axes from `axis` (a blob, or bottom 1),
    plus a bias blob where bias_term."""

    type = "Scale"
    bottoms = (1, 2)
    identity_coordinates = True

    def setup(self, params, bottom_shapes):
        scale = params.message("scale_param")
        shape = tuple(bottom_shapes[0])
        axis = scale.int("axis", 1)
        self.axis = axis + len(shape) if axis < 0 else axis
        if len(bottom_shapes) == 2:
            span = tuple(bottom_shapes[1])
        else:
            num_axes = scale.int("num_axes", 1)
            end = len(shape) if num_axes == -1 else self.axis + num_axes
            span = shape[self.axis:end]
        if not 0 <= self.axis <= len(shape) or shape[self.axis:self.axis + len(span)] != span:
            raise self.error(f"scales axes {self.axis}.. of {shape} by a scale of shape {span}")
        self.span = span
        if len(bottom_shapes) == 1:
            self.params.append(ParamSpec(span, scale.message("filler") if "filler" in scale
                                         else _constant(1.0)))
        if scale.bool("bias_term", False):
            self.params.append(ParamSpec(span, scale.message("bias_filler")))

    def _broadcast(self, value, x):
        return value.reshape((1,) * self.axis + self.span + (1,) * (x.dim() - self.axis - len(self.span)))

    def forward(self, bottoms, params):
        x = bottoms[0]
        scale = bottoms[1] if len(bottoms) == 2 else params[0]
        out = x * self._broadcast(scale, x)
        if len(params) > (0 if len(bottoms) == 2 else 1):
            out = out + self._broadcast(params[-1], x)
        return [out]


class Concat(Layer):
    type = "Concat"
    bottoms = (1, None)

    def setup(self, params, bottom_shapes):
        concat = params.message("concat_param")
        axis = concat.int("axis", 1) if "axis" in concat else concat.int("concat_dim", 1)
        rank = len(bottom_shapes[0])
        self.axis = axis + rank if axis < 0 else axis
        for shape in bottom_shapes:
            if len(shape) != rank or any(a != b for i, (a, b) in enumerate(zip(shape, bottom_shapes[0], strict=True))
                                         if i != self.axis):
                raise self.error(f"concatenates on axis {self.axis} bottoms of shapes "
                                 f"{[tuple(s) for s in bottom_shapes]}: they must agree on every other axis")

    def forward(self, bottoms, params):
        return [torch.cat(bottoms, self.axis)] if len(bottoms) > 1 else [bottoms[0]]

    def coord_map(self):
        return [(1.0, 0.0), (1.0, 0.0)] if self.axis < 2 else None


class Split(Layer):
    """Every top is the bottom itself (Caffe's Split shares the bottom's data)."""

    type = "Split"
    tops = (1, None)
    identity_coordinates = True

    def forward(self, bottoms, params):
        return [bottoms[0]] * len(self.definition.tops)


class Softmax(Layer):
    type = "Softmax"
    identity_coordinates = True

    def setup(self, params, bottom_shapes):
        axis = params.message("softmax_param").int("axis", 1)
        self.axis = axis + len(bottom_shapes[0]) if axis < 0 else axis

    def forward(self, bottoms, params):
        return [torch.softmax(bottoms[0], self.axis)]


class ArgMax(Layer):
    """Caffe's ArgMax: the top_k indices (as floats) of the largest values over `axis`, or over
    everything but the batch axis; ties go to the larger index (Caffe sorts (value, index) pairs
    with std::greater); with out_max_val the values (with an axis) or indices then values."""

    type = "ArgMax"

    def setup(self, params, bottom_shapes):
        argmax = params.message("argmax_param")
        self.out_max_val = argmax.bool("out_max_val", False)
        self.top_k = argmax.int("top_k", 1, minimum=1)
        shape = tuple(bottom_shapes[0])
        self.axis = None
        if "axis" in argmax:
            axis = argmax.int("axis")
            self.axis = axis + len(shape) if axis < 0 else axis
        size = shape[self.axis] if self.axis is not None else int(np.prod(shape[1:]))
        if self.top_k > size:
            raise self.error(f"has top_k {self.top_k}, more than the {size} values it ranks")

    def forward(self, bottoms, params):
        x = bottoms[0]
        values = x if self.axis is not None else x.reshape(x.shape[0], -1)
        axis = self.axis if self.axis is not None else 1
        size = values.shape[axis]
        order = torch.sort(values.flip(axis), dim=axis, descending=True, stable=True)
        top_values = order.values.narrow(axis, 0, self.top_k)
        top_indices = (size - 1 - order.indices.narrow(axis, 0, self.top_k)).to(x.dtype)
        if self.axis is not None:
            return [top_values if self.out_max_val else top_indices]
        # (N, 1 or 2, top_k) and trailing 1s to the bottom's rank: the indices, then the values
        trailing = (1,) * (max(x.dim(), 3) - 3)
        out = torch.stack([top_indices, top_values], 1) if self.out_max_val else top_indices[:, None]
        return [out.reshape(x.shape[0], out.shape[1], self.top_k, *trailing)]


class InnerProduct(Layer):
    type = "InnerProduct"

    def setup(self, params, bottom_shapes):
        inner = params.message("inner_product_param")
        if "num_output" not in inner:
            raise self.error("needs inner_product_param.num_output")
        outputs = inner.int("num_output", minimum=1)
        shape = tuple(bottom_shapes[0])
        axis = inner.int("axis", 1)
        self.axis = axis + len(shape) if axis < 0 else axis
        self.transpose = inner.bool("transpose", False)
        inputs = int(np.prod(shape[self.axis:]))
        self.params = [ParamSpec((inputs, outputs) if self.transpose else (outputs, inputs),
                                 inner.message("weight_filler"))]
        if inner.bool("bias_term", True):
            self.params.append(ParamSpec((outputs,), inner.message("bias_filler")))

    def forward(self, bottoms, params):
        x = bottoms[0]
        flat = x.reshape(*x.shape[:self.axis], -1)
        weight = params[0].t() if self.transpose else params[0]
        return [F.linear(flat, weight, params[1] if len(params) > 1 else None)]


class Silence(Layer):
    type = "Silence"
    bottoms = (1, None)
    tops = (0, 0)

    def forward(self, bottoms, params):
        return []


class Interp(Layer):
    """DeepLab's Interp (deeplab-public-ver2): bilinear resizing with aligned corners (the corner
    pixels of input and output coincide; source = dest * (in - 1) / (out - 1) in float32), to
    `height` x `width`, or by `shrink_factor` s to (H - 1) / s + 1 and `zoom_factor` z to
    H + (H - 1)(z - 1) (shrink first when both are given), after cropping -pad_beg and -pad_end
    pixels (0 or negative)."""

    type = "Interp"

    def setup(self, params, bottom_shapes):
        interp = params.message("interp_param")
        self.pad = (interp.int("pad_beg", 0), interp.int("pad_end", 0))
        if max(self.pad) > 0:
            raise self.error(f"has pad_beg/pad_end {self.pad}: Interp only crops (0 or negative pads)")
        self.shrink = interp.int("shrink_factor", 1, minimum=1) if "shrink_factor" in interp else None
        self.zoom = interp.int("zoom_factor", 1, minimum=1) if "zoom_factor" in interp else None
        self.size = (interp.int("height", minimum=1), interp.int("width", minimum=1)) \
            if "height" in interp and "width" in interp else None
        if self.shrink is None and self.zoom is None and self.size is None:
            raise self.error("needs interp_param's shrink_factor, zoom_factor, or height and width")
        _four_d(self, bottom_shapes[0])

    def output_size(self, size):
        """Caffe's InterpLayer::Reshape along one axis of `size` pixels (after the crop)."""
        if self.shrink is not None or self.zoom is not None:
            out = size if self.shrink is None else (size - 1) // self.shrink + 1
            return out if self.zoom is None else out + (out - 1) * (self.zoom - 1)
        return None

    def forward(self, bottoms, params):
        x = bottoms[0]
        begin, end = -self.pad[0], -self.pad[1]
        if begin or end:
            x = x[:, :, begin:x.shape[2] - end, begin:x.shape[3] - end]
        height, width = x.shape[2:]
        # Caffe's precedence: one factor alone, then height and width, then both factors.
        one_factor = (self.shrink is None) != (self.zoom is None)
        size = self.size if self.size is not None and not one_factor else \
            (self.output_size(height), self.output_size(width))
        if size[0] < 1 or size[1] < 1 or height < 1 or width < 1:
            raise self.error(f"resizes {height}x{width} to {size[0]}x{size[1]}: both must be positive")
        return [resize_aligned(x, size)]


def resize_aligned(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resizing with aligned corners as Caffe's caffe_cpu_interp2 computes it (its float32
    source positions and weights), to `size` (h, w): a copy where the size is the input's."""
    if tuple(size) == tuple(x.shape[2:]):
        return x.clone()
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


MEANFIELD_MODES = ("POTTS",)


class MultiStageMeanfield(Layer):
    """The CRF-RNN fork's CRF-as-RNN layer, run by impls' CrfRnn mean field (impls._crfrnn.refine):
    bottoms (unary logits, the logits whose softmax starts the first step (the unary itself in
    CRF-RNN's nets), the image whose values feed the bilateral kernel: the net's mean-subtracted
    BGR input, in its channel order); blobs spatial and bilateral kernel weights and the
    compatibility, each (1, 1, C, C); theta_alpha, theta_beta, theta_gamma and num_iterations from
    multi_stage_meanfield_param. Its top is the last step's logits (unnormalised)."""

    type = "MultiStageMeanfield"
    bottoms = (3, 3)
    identity_coordinates = True

    def setup(self, params, bottom_shapes):
        from impls import _crfrnn

        field = params.message("multi_stage_meanfield_param")
        unary, initial, image = (tuple(shape) for shape in bottom_shapes)
        _four_d(self, unary)
        if initial != unary or len(image) != 4 or image[0] != unary[0] or image[1] != 3 or image[2:] != unary[2:]:
            raise self.error(f"takes the unary, the initial logits of the same shape and a 3-channel image of its "
                             f"size, got {unary}, {initial} and {image}")
        field.enum("compatibility_mode", MEANFIELD_MODES, "POTTS")
        try:
            self.config = _crfrnn.check_config(unary[1], field.float("theta_alpha", 10.0),
                                               field.float("theta_beta", 10.0), field.float("theta_gamma", 10.0),
                                               field.int("num_iterations", 1))
        except (TypeError, ValueError) as error:
            raise self.error(str(error).replace("CrfRnn: ", "")) from None
        channels = unary[1]
        eye = np.eye(channels, dtype=np.float32).reshape(1, 1, channels, channels)
        self.params = [ParamSpec(eye.shape, initial=field.float("spatial_filter_weight", 1.0) * eye),
                       ParamSpec(eye.shape, initial=field.float("bilateral_filter_weight", 1.0) * eye),
                       ParamSpec(eye.shape, initial=-eye)]

    def top_shapes(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms, params):
        from impls.torch.crfrnn import mean_field

        unary, initial, image = bottoms
        channels = unary.shape[1]
        weights = [p.reshape(channels, channels).to(unary.dtype) for p in params]
        return [mean_field(self.config, unary, image, weights, initial=initial)]


def _constant(value: float) -> Message:
    return Message(fields=[("type", "constant", 0), ("value", value, 0)])


LAYER_TYPES = {cls.type: cls for cls in (Convolution, Deconvolution, Pooling, ReLU, Dropout, Crop, Eltwise,
                                         BatchNorm, Scale, Concat, Split, Softmax, ArgMax, InnerProduct, Silence,
                                         Interp, MultiStageMeanfield)}


# ---- Fillers: a parameter's values when no file sets them ---------------------------------------

FILLERS = ("constant", "gaussian", "uniform", "xavier", "msra", "bilinear")


def fill(spec: ParamSpec, layer: str, index: int) -> np.ndarray:
    """Caffe's filler for a parameter (constant 0 where none is given); the random ones draw from a
    generator seeded by the layer's name, so that a net without weights is the same every time."""
    if spec.initial is not None:
        return np.array(spec.initial, np.float32).reshape(spec.shape)
    filler = spec.filler if spec.filler is not None else Message()
    kind = filler.string("type", "constant") if "type" in filler else "constant"
    shape = spec.shape
    rng = np.random.default_rng([zlib.crc32(layer.encode()), index])
    count = int(np.prod(shape))
    fan_in = count // shape[0] if shape and shape[0] else 1
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else 1
    if kind == "constant":
        return np.full(shape, filler.float("value", 0.0), np.float32)
    if kind == "gaussian":
        return (filler.float("mean", 0.0) + filler.float("std", 1.0) * rng.standard_normal(shape)).astype(np.float32)
    if kind == "uniform":
        return rng.uniform(filler.float("min", 0.0), filler.float("max", 1.0), shape).astype(np.float32)
    if kind in ("xavier", "msra"):
        norm = filler.enum("variance_norm", ("FAN_IN", "FAN_OUT", "AVERAGE"), "FAN_IN")
        n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[norm]
        if kind == "xavier":
            bound = math.sqrt(3.0 / n)
            return rng.uniform(-bound, bound, shape).astype(np.float32)
        return (math.sqrt(2.0 / n) * rng.standard_normal(shape)).astype(np.float32)
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise ValueError(f"layer {layer!r}: the bilinear filler fills square 4-D weights, got {shape}")
        size = shape[3]
        factor = math.ceil(size / 2)
        centre = (2 * factor - 1 - factor % 2) / (2.0 * factor)
        x = np.arange(size)
        line = 1 - np.abs(x / factor - centre)
        return np.broadcast_to(np.outer(line, line), shape).astype(np.float32)
    raise ValueError(f"layer {layer!r}: filler {kind!r} is not implemented (it fills with {', '.join(FILLERS)})")

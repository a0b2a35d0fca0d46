"""A zoo of small Caffe nets, one or a few per layer type and parameter that impls.caffe runs, each
with seeded inputs and seeded weights (in the wire format of tests/caffe_files.py): OpenCV's dnn
runs them in reference/caffe_oracle.py (goldens in reference/caffe_layers.npz), impls.caffe.Net in
tests/test_caffe_layers.py. Blob shapes are written here, not derived by the code under test.

A net's prototxt takes its input from an Input layer ("data", and "data2" where a layer has two
bottoms of its own), so that OpenCV and Caffe read it alike."""

from __future__ import annotations

import dataclasses
import itertools
import zlib

import numpy as np

from tests.caffe_files import write_caffemodel


@dataclasses.dataclass(frozen=True)
class ZooNet:
    layers: str  # the prototxt's layers after the Input layer
    inputs: dict  # {blob: shape}
    blobs: dict  # {layer: [blob shapes]}
    tops: tuple  # the blobs compared (OpenCV names outputs by layer: these are layer names too)
    # OpenCV runs it as Caffe does; else it is checked against Caffe's formula in NumPy: OpenCV has
    # no ArgMax, ignores InnerProduct's transpose and Interp's shrink_factor and pads, and drops the
    # window past the edge that Caffe's pooling keeps (-FLT_MAX) when the stride exceeds the kernel.
    opencv: bool = True

    @property
    def prototxt(self) -> str:
        shapes = " ".join(f"shape {{ {' '.join(f'dim: {d}' for d in shape)} }}" for shape in self.inputs.values())
        tops = "".join(f'  top: "{name}"\n' for name in self.inputs)
        return (f'name: "zoo"\nlayer {{\n  name: "input"\n  type: "Input"\n{tops}  input_param {{ {shapes} }}\n}}\n'
                f'{self.layers}')


def _layer(name, type_, bottoms, params="", top=None):
    bottoms = "".join(f'  bottom: "{b}"\n' for b in bottoms)
    return f'layer {{\n  name: "{name}"\n  type: "{type_}"\n{bottoms}  top: "{top or name}"\n{params}}}\n'


def _conv(name, bottom, params, type_="Convolution"):
    return _layer(name, type_, [bottom], f"  convolution_param {{ {params} }}\n")


def _pool(name, bottom, params):
    return _layer(name, "Pooling", [bottom], f"  pooling_param {{ {params} }}\n")


X = (2, 3, 9, 11)  # batch 2: every layer must treat each image alike
ZOO = {
    "conv": ZooNet(_conv("conv", "data", "num_output: 4 kernel_size: 3 pad: 1"), {"data": X},
                   {"conv": [(4, 3, 3, 3), (4,)]}, ("conv",)),
    "conv_hw": ZooNet(_conv("conv_hw", "data", "num_output: 5 kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 3 "
                                               "pad_h: 1 pad_w: 2 bias_term: false"), {"data": X},
                      {"conv_hw": [(5, 3, 3, 5)]}, ("conv_hw",)),
    "conv_dilated": ZooNet(_conv("conv_dilated", "data", "num_output: 2 kernel_size: 3 dilation: 2 pad: 2"),
                           {"data": X}, {"conv_dilated": [(2, 3, 3, 3), (2,)]}, ("conv_dilated",)),
    "conv_group": ZooNet(_conv("conv_group", "data", "num_output: 6 kernel_size: 3 group: 2 stride: 2"),
                         {"data": (1, 4, 10, 9)}, {"conv_group": [(6, 2, 3, 3), (6,)]}, ("conv_group",)),
    "deconv": ZooNet(_conv("deconv", "data", "num_output: 4 kernel_size: 4 stride: 2", "Deconvolution"),
                     {"data": X}, {"deconv": [(3, 4, 4, 4), (4,)]}, ("deconv",)),
    "deconv_pad_group": ZooNet(_conv("deconv_pad_group", "data", "num_output: 3 kernel_size: 3 stride: 2 pad: 1 "
                                                                 "group: 3 bias_term: false", "Deconvolution"),
                               {"data": X}, {"deconv_pad_group": [(3, 1, 3, 3)]}, ("deconv_pad_group",)),
    "pool_max_ceil": ZooNet(_pool("pool_max_ceil", "data", "pool: MAX kernel_size: 3 stride: 2"),
                            {"data": (1, 2, 10, 11)}, {}, ("pool_max_ceil",)),
    "pool_max_pad": ZooNet(_pool("pool_max_pad", "data", "pool: MAX kernel_size: 3 stride: 2 pad: 1"),
                           {"data": (1, 2, 9, 12)}, {}, ("pool_max_pad",)),
    "pool_ave_pad": ZooNet(_pool("pool_ave_pad", "data", "pool: AVE kernel_size: 3 stride: 2 pad: 1"),
                           {"data": (1, 2, 9, 12)}, {}, ("pool_ave_pad",)),
    "pool_ave_ceil": ZooNet(_pool("pool_ave_ceil", "data", "pool: AVE kernel_size: 2 stride: 2"),
                            {"data": (1, 2, 7, 9)}, {}, ("pool_ave_ceil",)),
    "pool_ave_big_pad": ZooNet(_pool("pool_ave_big_pad", "data", "pool: AVE kernel_size: 3 stride: 3 pad: 2"),
                               {"data": (1, 2, 8, 10)}, {}, ("pool_ave_big_pad",)),
    "pool_global": ZooNet(_pool("pool_global", "data", "pool: AVE global_pooling: true"),
                          {"data": X}, {}, ("pool_global",)),
    "pool_stride_over_kernel": ZooNet(_pool("pool_stride_over_kernel", "data", "pool: MAX kernel_size: 1 stride: 2"),
                                      {"data": (1, 2, 4, 6)}, {}, ("pool_stride_over_kernel",), opencv=False),
    "relu": ZooNet(_layer("relu", "ReLU", ["data"]), {"data": X}, {}, ("relu",)),
    "relu_leaky": ZooNet(_layer("relu_leaky", "ReLU", ["data"], "  relu_param { negative_slope: 0.1 }\n"),
                         {"data": X}, {}, ("relu_leaky",)),
    "dropout": ZooNet(_layer("dropout", "Dropout", ["data"], "  dropout_param { dropout_ratio: 0.3 }\n"),
                      {"data": X}, {}, ("dropout",)),
    "crop": ZooNet(_layer("crop", "Crop", ["data", "data2"], "  crop_param { axis: 2 offset: 1 offset: 3 }\n"),
                   {"data": X, "data2": (2, 3, 5, 6)}, {}, ("crop",)),
    "crop_channels": ZooNet(_layer("crop_channels", "Crop", ["data", "data2"], "  crop_param { axis: 1 offset: 1 }\n"),
                            {"data": X, "data2": (2, 2, 7, 9)}, {}, ("crop_channels",)),
    "eltwise_sum": ZooNet(_layer("eltwise_sum", "Eltwise", ["data", "data2"],
                                 "  eltwise_param { operation: SUM coeff: 0.5 coeff: -2 }\n"),
                          {"data": X, "data2": X}, {}, ("eltwise_sum",)),
    "eltwise_prod": ZooNet(_layer("eltwise_prod", "Eltwise", ["data", "data2"],
                                  "  eltwise_param { operation: PROD }\n"),
                           {"data": X, "data2": X}, {}, ("eltwise_prod",)),
    "eltwise_max": ZooNet(_layer("eltwise_max", "Eltwise", ["data", "data2"], "  eltwise_param { operation: MAX }\n"),
                          {"data": X, "data2": X}, {}, ("eltwise_max",)),
    "batchnorm": ZooNet(_layer("batchnorm", "BatchNorm", ["data"], "  batch_norm_param { eps: 0.001 }\n")
                        + _layer("scale", "Scale", ["batchnorm"], "  scale_param { bias_term: true }\n"),
                        {"data": X}, {"batchnorm": [(3,), (3,), (1,)], "scale": [(3,), (3,)]}, ("batchnorm", "scale")),
    "batchnorm_zero_factor": ZooNet(_layer("batchnorm_zero_factor", "BatchNorm", ["data"]), {"data": X},
                                    {"batchnorm_zero_factor": [(3,), (3,), (1,)]}, ("batchnorm_zero_factor",)),
    "scale": ZooNet(_layer("scale", "Scale", ["data"]), {"data": X}, {"scale": [(3,)]}, ("scale",)),
    "scale_two_bottoms": ZooNet(_layer("scale_two_bottoms", "Scale", ["data", "data2"],
                                       "  scale_param { axis: 0 }\n"),
                                {"data": X, "data2": (2, 3)}, {}, ("scale_two_bottoms",)),
    "concat": ZooNet(_layer("concat", "Concat", ["data", "data2"]), {"data": X, "data2": (2, 2, 9, 11)}, {},
                     ("concat",)),
    "concat_height": ZooNet(_layer("concat_height", "Concat", ["data", "data2"], "  concat_param { axis: 2 }\n"),
                            {"data": X, "data2": (2, 3, 4, 11)}, {}, ("concat_height",)),
    "split": ZooNet('layer {\n  name: "split"\n  type: "Split"\n  bottom: "data"\n  top: "a"\n  top: "b"\n}\n'
                    + _layer("relu_a", "ReLU", ["a"]) + _layer("sum", "Eltwise", ["b", "relu_a"]),
                    {"data": X}, {}, ("relu_a", "sum")),
    "softmax": ZooNet(_layer("softmax", "Softmax", ["data"]), {"data": X}, {}, ("softmax",)),
    "softmax_width": ZooNet(_layer("softmax_width", "Softmax", ["data"], "  softmax_param { axis: 3 }\n"),
                            {"data": X}, {}, ("softmax_width",)),
    "argmax": ZooNet(_layer("argmax", "ArgMax", ["data"], "  argmax_param { axis: 1 }\n"),
                     {"data": X}, {}, ("argmax",), opencv=False),
    "argmax_top2": ZooNet(_layer("argmax_top2", "ArgMax", ["data"], "  argmax_param { top_k: 2 out_max_val: true }\n"),
                          {"data": X}, {}, ("argmax_top2",), opencv=False),
    "inner_product": ZooNet(_layer("inner_product", "InnerProduct", ["data"],
                                   "  inner_product_param { num_output: 7 }\n"),
                            {"data": X}, {"inner_product": [(7, 297), (7,)]}, ("inner_product",)),
    "inner_product_transpose": ZooNet(_layer("inner_product_transpose", "InnerProduct", ["data"],
                                             "  inner_product_param { num_output: 5 transpose: true "
                                             "bias_term: false }\n"),
                                      {"data": X}, {"inner_product_transpose": [(297, 5)]},
                                      ("inner_product_transpose",), opencv=False),
    "interp_size": ZooNet(_layer("interp_size", "Interp", ["data"], "  interp_param { height: 20 width: 7 }\n"),
                          {"data": (1, 3, 13, 9)}, {}, ("interp_size",)),
    "interp_zoom": ZooNet(_layer("interp_zoom", "Interp", ["data"], "  interp_param { zoom_factor: 3 }\n"),
                          {"data": (1, 3, 13, 9)}, {}, ("interp_zoom",)),
    # OpenCV reads Interp's height, width and zoom_factor only: these against Caffe's formula.
    "interp_shrink": ZooNet(_layer("interp_shrink", "Interp", ["data"], "  interp_param { shrink_factor: 2 }\n"),
                            {"data": (1, 3, 13, 9)}, {}, ("interp_shrink",), opencv=False),
    "interp_shrink_zoom": ZooNet(_layer("interp_shrink_zoom", "Interp", ["data"],
                                        "  interp_param { shrink_factor: 4 zoom_factor: 3 }\n"),
                                 {"data": (1, 3, 13, 9)}, {}, ("interp_shrink_zoom",), opencv=False),
    "interp_crop": ZooNet(_layer("interp_crop", "Interp", ["data"],
                                 "  interp_param { zoom_factor: 2 pad_beg: -1 pad_end: -2 }\n"),
                          {"data": (1, 3, 13, 9)}, {}, ("interp_crop",), opencv=False),
    "silence": ZooNet(_layer("relu", "ReLU", ["data"]) + 'layer {\n  name: "silence"\n  type: "Silence"\n'
                      '  bottom: "data2"\n}\n', {"data": X, "data2": X}, {}, ("relu",)),
}


def _rng(*keys):
    return np.random.default_rng([zlib.crc32("/".join(map(str, keys)).encode())])


def zoo_inputs(name: str) -> dict:
    """{blob: float32 array} of a zoo net's inputs (seeded; ties and negative values included)."""
    net = ZOO[name]
    arrays = {}
    for blob, shape in net.inputs.items():
        values = _rng(name, blob).standard_normal(shape).astype(np.float32)
        if name.startswith("argmax"):
            values = np.round(values * 2) / 2  # ties, which Caffe breaks towards the larger index
        arrays[blob] = values
    return arrays


def zoo_layers(name: str) -> list:
    """[(layer, type, [blobs])] of a zoo net's seeded weights."""
    layers = []
    for layer, shapes in ZOO[name].blobs.items():
        type_ = "BatchNorm" if layer.startswith("batchnorm") else "Scale" if layer.startswith("scale") else \
            "InnerProduct" if layer.startswith("inner") else "Deconvolution" if layer.startswith("deconv") else \
            "Convolution"
        blobs = [_rng(name, layer, i).standard_normal(shape).astype(np.float32) for i, shape in enumerate(shapes)]
        if type_ == "BatchNorm":  # mean, a positive variance, and the factor (2.5, or 0 for the zero-factor net)
            blobs[1] = np.abs(blobs[1]) + 0.5
            blobs[2] = np.array([0.0 if "zero" in layer else 2.5], np.float32)
        layers.append((layer, type_, blobs))
    return layers


def zoo_weights(path, name: str, **encoding):
    """The .caffemodel of a zoo net's weights, or None for a net without any."""
    layers = zoo_layers(name)
    return write_caffemodel(path, layers, **encoding) if layers else None


def caffe_interp(x, height, width):
    """deeplab-public-ver2's caffe_cpu_interp2, loop by loop in float32: source positions
    (in - 1) / (out - 1) * out index, the next pixel clamped at the edge."""
    channels, height_in, width_in = x.shape[1:]
    ratios = [np.float32(np.float32(size_in - 1) / np.float32(size - 1)) if size > 1 else np.float32(0)
              for size_in, size in ((height_in, height), (width_in, width))]
    out = np.zeros((x.shape[0], channels, height, width), np.float32)
    for i, j in itertools.product(range(height), range(width)):
        (hi, hl), (wi, wl) = [(int(r), np.float32(r - np.float32(int(r)))) for r in
                              (np.float32(ratios[0] * np.float32(i)), np.float32(ratios[1] * np.float32(j)))]
        hp, wp = int(hi < height_in - 1), int(wi < width_in - 1)
        top = (1 - wl) * x[:, :, hi, wi] + wl * x[:, :, hi, wi + wp]
        bottom = (1 - wl) * x[:, :, hi + hp, wi] + wl * x[:, :, hi + hp, wi + wp]
        out[:, :, i, j] = (1 - hl) * top + hl * bottom
    return out

"""FCN bilinear upsampling: the oracle implementation, in plain NumPy.

The docstrings here are the documentation of every backend: `impls.torch` and
`impls.tf` provide the same names and signatures, in their native layout.
"""

from __future__ import annotations

import numpy as np

from impls import _checks, _sampling

__all__ = ["bilinear_kernel", "upsample_bilinear", "BilinearUpsample"]


def bilinear_kernel(factor):
    """The 2-D bilinear interpolation kernel of FCN's upsampling layers.

    Args:
        factor: upsampling factor f, a positive integer.

    Returns:
        float64 array of shape (k, k) with k = 2f - f % 2: the outer product of the
        1-D tent `1 - |i - c| / f`, centred at c = f - 1 (odd k) or f - 0.5 (even k),
        exactly as FCN's `surgery.upsample_filt` makes it.
    """
    return _sampling.bilinear_kernel(factor)


def upsample_bilinear(x, factor):
    """Upsample a batch by an integer factor with FCN's bilinear transposed convolution.

    Each channel is convolved-transposed with `bilinear_kernel(factor)` at stride f and
    cropped by f // 2 on the top/left (TF's "SAME", torch's `padding=f // 2`), so the
    output is (H*f, W*f). This equals
    `scipy.ndimage.zoom(x[n], (f, f, 1), order=1, mode="grid-constant", grid_mode=True, cval=0)`
    over the whole output: the image is treated as pixel areas and interpolated towards
    zero beyond its edge. It is not `tf.image.resize` or `F.interpolate`, which clamp at
    the border.

    Args:
        x: batch in the backend's native layout: (N, H, W, C) for NumPy and TF,
            (N, C, H, W) for torch; float32 or float64, no dimension empty.
        factor: upsampling factor f, a positive integer (FCN uses 2, 8, 16 and 32).

    Returns:
        The upsampled batch, same dtype and layout, spatial size (H*f, W*f). The input
        is not modified.

    Raises:
        TypeError: `factor` is not an integer, or `x` is not floating point.
        ValueError: `factor` < 1, `x` has the wrong rank, is empty, or holds NaN or inf (the
            backends' transposed convolutions would spread a NaN differently: NumPy's over
            its kernel's zero taps too, so it is refused; TF checks in eager mode only).
    """
    factor = _checks.positive_int(factor, op="upsample_bilinear", name="factor")
    x = np.asarray(x)
    _checks.float_batch(x.shape, x.dtype.name, op="upsample_bilinear", layout="NHWC")
    _checks.finite(bool(np.isfinite(x).all()), op="upsample_bilinear", name="x")
    kernel = bilinear_kernel(factor).astype(x.dtype)
    return _conv_transpose(x, kernel, factor, padding="same", depthwise=True)


class BilinearUpsample:
    """FCN's upsampling layer: a transposed convolution initialised with the bilinear kernel.

    The kernel is C x C with the bilinear kernel on the channel diagonal, like FCN's
    `surgery.interp`; with `trainable=True` the frameworks learn all of it (FCN-16s/8s),
    with `trainable=False` it stays fixed (FCN-32s's final upsampler). The NumPy layer
    evaluates any kernel, so it is the oracle for a trained and ported torch or TF layer.

    Args:
        channels: number of input and output channels C.
        factor: upsampling factor f (stride); kernel size k = 2f - f % 2.
        trainable: whether the framework optimises the kernel.
        padding: "same" crops f // 2 to give (H*f, W*f), as `upsample_bilinear`;
            "valid" keeps the full ((H-1)*f + k) output of Caffe's Deconvolution,
            to be cropped by the network (FCN's crop layers).
        dtype: weight dtype: "float32" (the default, None) or "float64", as a string or
            the framework's dtype object.
        name: the layer's name (Keras: its layer name, which impls.port matches; NumPy and
            torch keep it as `.name`).

    Weights: NumPy and TF hold `kernel` in HWOI (k, k, C_out, C_in); torch holds
    `weight` in IOHW (C_in, C_out, k, k). No bias, as in FCN.
    """

    def __init__(self, channels: int, factor: int, *, trainable: bool = False, padding: str = "same", dtype=None,
                 name: str | None = None):
        op = "BilinearUpsample"
        self.name = name
        self.channels = _checks.positive_int(channels, op=op, name="channels")
        self.factor = _checks.positive_int(factor, op=op, name="factor")
        self.padding = _checks.one_of(padding, _checks.PADDINGS, op=op, name="padding")
        self.trainable = bool(trainable)
        dtype = np.dtype(_checks.float_dtype(dtype, op=op))
        self.kernel = np.einsum("hw,oi->hwoi", bilinear_kernel(self.factor), np.eye(self.channels)).astype(dtype)

    def __call__(self, x):
        x = np.asarray(x)
        _checks.float_batch(x.shape, x.dtype.name, op="BilinearUpsample", layout="NHWC")
        _checks.channel_count(x.shape[-1], self.channels, op="BilinearUpsample", layout="NHWC")
        return _conv_transpose(x, self.kernel, self.factor, padding=self.padding, depthwise=False)


def _conv_transpose(x, kernel, factor, *, padding, depthwise):
    """Strided transposed convolution of NHWC `x`.

    `kernel` is (k, k) applied to every channel when `depthwise`, else HWOI
    (k, k, C_out, C_in). Output pixel o receives x[i] * kernel[o - i*f]; splitting the
    kernel into f x f blocks turns that into a few dense products instead of a loop over
    pixels: block (a, b) of input pixel (i, j) lands on output block (i + a, j + b).
    """
    batch, height, width, _ = x.shape
    size = kernel.shape[0]
    blocks = -(-size // factor)
    padded = np.zeros((blocks * factor, blocks * factor) + kernel.shape[2:], dtype=kernel.dtype)
    padded[:size, :size] = kernel
    out_channels = x.shape[-1] if depthwise else kernel.shape[2]
    dtype = np.result_type(x.dtype, kernel.dtype)
    out = np.zeros((batch, height + blocks - 1, factor, width + blocks - 1, factor, out_channels), dtype)
    for a in range(blocks):
        for b in range(blocks):
            block = padded[a * factor:(a + 1) * factor, b * factor:(b + 1) * factor]
            if depthwise:
                out[:, a:a + height, :, b:b + width] += np.einsum("nhwc,rs->nhrwsc", x, block)
            else:
                out[:, a:a + height, :, b:b + width] += np.einsum("nhwi,rsoi->nhrwso", x, block)
    out = out.reshape(batch, (height + blocks - 1) * factor, (width + blocks - 1) * factor, out_channels)
    if padding == "valid":
        return out[:, :(height - 1) * factor + size, :(width - 1) * factor + size]
    crop = factor // 2
    return out[:, crop:crop + height * factor, crop:crop + width * factor]

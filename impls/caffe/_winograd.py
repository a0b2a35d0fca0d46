"""3x3 convolutions by Winograd's minimal filtering, F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016), on torch's CPU operations: each 6x6 input tile d becomes
V = B^T d B, each 3x3 kernel g becomes U = G g G^T, their products summed over the input channels
(36 matrix products, one per tile position) give M, and each output tile is A^T M A. The products
take 4 times fewer multiply-adds than a direct convolution, for more memory traffic in the
transforms: a win where the channels are many and the image not too large to stream through the
cache (impls.caffe uses it for 3x3 convolutions of at least 128 input and 256 output channels;
measured at FCN-8s's 500x500: conv4_2 230 ms to 101 ms, conv3_2 229 ms to 117 ms, conv2_2 with
128 -> 128 channels slower, 230 ms to 285 ms). Results differ from the direct convolution by float32
rounding of the transforms (5e-6 to 9e-6 of the largest output, against 1e-6 for the direct one).

The tiles are processed in bands of tile rows of about BAND_BYTES, so that each band's transformed
input and products stay in the cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F

BAND_BYTES = 8 << 20
TILE = 4  # output pixels per tile side; the input tile is TILE + 2
_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0],
       [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
      [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]


def applies(kernel, stride, dilation, group, channels, outputs) -> bool:
    """Whether a convolution is one this module computes faster than oneDNN (see the module)."""
    return (kernel == (3, 3) and stride == (1, 1) and dilation == (1, 1) and group == 1 and channels >= 128
            and outputs >= 256)


def transform_weights(weight: torch.Tensor) -> torch.Tensor:
    """(36, C, K) float32 U = G g G^T of (K, C, 3, 3) weights, per tile position (computed in float64)."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ij,kcjl,ml->imkc", g, weight.double(), g)
    return u.reshape(36, weight.shape[0], weight.shape[1]).permute(0, 2, 1).to(weight.dtype).contiguous()


def convolve(x: torch.Tensor, transformed: torch.Tensor, bias: torch.Tensor | None, pad) -> torch.Tensor:
    """The 3x3, stride 1 convolution of x (N, C, H, W) with transform_weights' U, padded by `pad`
    (h, w) with zeros; returns (N, K, H', W') in channels-last memory."""
    n, c, h, w = x.shape
    k = transformed.shape[2]
    out_h, out_w = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
    tiles_h, tiles_w = -(-out_h // TILE), -(-out_w // TILE)
    kb, ka = _kronecker(_BT, x), _kronecker(_AT, x)
    nhwc = x.permute(0, 2, 3, 1)
    padded = F.pad(nhwc, (0, 0, pad[1], TILE * tiles_w + 2 - w - pad[1], pad[0], TILE * tiles_h + 2 - h - pad[0]))
    out = torch.empty(n, TILE * tiles_h, TILE * tiles_w, k, dtype=x.dtype, device=x.device)
    band = max(1, BAND_BYTES // (36 * tiles_w * max(c, k) * x.element_size() * n))
    for start in range(0, tiles_h, band):
        rows = min(band, tiles_h - start)
        tiles = torch.empty(36, n, rows, tiles_w, c, dtype=x.dtype, device=x.device)
        for r in range(6):
            row = padded[:, TILE * start + r:TILE * (start + rows) + r:TILE]
            for s in range(6):
                tiles[6 * r + s] = row[:, :, s:s + TILE * tiles_w:TILE]
        v = (kb @ tiles.reshape(36, -1)).reshape(36, n * rows * tiles_w, c)
        m = torch.bmm(v, transformed)
        y = (ka @ m.reshape(36, -1)).reshape(TILE, TILE, n, rows, tiles_w, k)
        out[:, TILE * start:TILE * (start + rows)] = y.permute(2, 3, 0, 4, 1, 5).reshape(n, TILE * rows, -1, k)
    if bias is not None:
        out += bias
    return out[:, :out_h, :out_w].permute(0, 3, 1, 2)


def _kronecker(matrix, like):
    m = torch.tensor(matrix, dtype=torch.float64)
    return torch.kron(m, m).to(dtype=like.dtype, device=like.device)

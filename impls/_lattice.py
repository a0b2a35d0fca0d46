"""The permutohedral lattice (Adams, Baek & Davis, Eurographics 2010) as pydensecrf (densecrf 2.2)
builds and filters it, written once for every backend against an impls._ops.Ops table, as
impls._meanfield is for the mean field. `impls.<backend>.PermutohedralLattice` checks its
arguments and builds this `Lattice`; the backends' OPS build it unchecked for the mean field.

The operation order is pydensecrf's wherever float rounding depends on it (the elevation, the
rounding to the remainder-0 point, the splat in point order, the blur, the slice corner by
corner), so that every backend matches pydensecrf and the native engine to float32 rounding.
The integer part (vertex keys, their numbering, the blur neighbours) is exact in any order.
"""

from __future__ import annotations

import numpy as np

from impls._checks import SUPPORTED_FLOAT_DTYPES
from impls._ops import Ops


class Lattice:
    """The lattice of (P, d) features, built once; `filter(values)` any number of times.

    Attributes (see impls.numpy.PermutohedralLattice): dtype, dim, num_points, weights (P, d+1),
    vertices (P, d+1), num_vertices, neighbors (d+1, 2, M).
    """

    def __init__(self, ops: Ops, features):
        self.ops = ops
        self.dtype = features.dtype
        self.dim = dim = int(features.shape[1])
        self.num_points = ops.num_rows(features)
        keys, self.weights = enclosing_simplices(ops, features)
        unique_keys, vertices = unique_rows(ops, ops.reshape(keys, (-1, dim)))
        self.vertices = ops.reshape(vertices, (-1, dim + 1))
        self.num_vertices = ops.num_rows(unique_keys)
        self.neighbors = blur_neighbors(ops, unique_keys)
        self._splat = ops.splatter(self.vertices, self.weights, self.num_vertices)
        # Rows of the filter's vertex values, where row 0 stands for every absent neighbour: index + 1.
        self._blur_rows = [(self.neighbors[direction, 0] + 1, self.neighbors[direction, 1] + 1)
                           for direction in range(dim + 1)]
        self._slice_rows = [self.vertices[:, corner] + 1 for corner in range(dim + 1)]
        # Folded into the slicing weights, as pydensecrf does.
        self._slice_weights = self.weights * ops.constant(slicing_alpha(dim), self.dtype, features)

    def filter(self, values, *, reverse=False):
        """Splat (P, C) `values` (in the lattice's dtype), blur, slice: (P, C). `reverse` blurs
        the directions in the opposite order, which is the transposed (adjoint) filter."""
        ops = self.ops
        splatted = self._splat(values)
        # Row 0 stays zero: it stands for every neighbour that is not in the lattice.
        lattice = ops.concat_rows([ops.zeros_like(splatted[:1]), splatted])
        for direction in range(self.dim, -1, -1) if reverse else range(self.dim + 1):
            before, after = self._blur_rows[direction]
            blurred = lattice[1:] + 0.5 * (ops.gather(lattice, before) + ops.gather(lattice, after))
            lattice = ops.concat_rows([lattice[:1], blurred])
        # Slice vertex by vertex in simplex order: the float32 sums then round as pydensecrf's.
        out = ops.zeros_like(values)
        for corner in range(self.dim + 1):
            out = out + self._slice_weights[:, corner, None] * ops.gather(lattice, self._slice_rows[corner])
        return out


def width_gradient(ops: Ops, lattice, values, upstream, filtered, transposed, centred, widths, *, reverse):
    """dL/dwidths (d,) of L = sum(upstream * K values), K the Gaussian filter the lattice
    approximates on features g = f / widths: exp(-|g_i - g_j|^2 / 2) in pydensecrf's units.

    dK_ij/dwidth_k = K_ij (g_ik - g_jk)^2 / width_k, so with G = upstream and v = values,
    width_k dL/dwidth_k = sum_ij G_i K_ij v_j (g_ik - g_jk)^2
                        = <g_k^2 G, K v> + <g_k^2 v, K^T G> - 2 <g_k G, K (g_k v)>:
    the forward's output K v (`filtered`), the transposed filter of the upstream K^T G
    (`transposed`: the values' own gradient) and one more filter of d x C columns g_k v.
    This is the gradient of the Gaussian the lattice approximates, not of its piecewise-linear
    interpolation. `centred` are the features g minus their mean, which leaves every
    difference g_i - g_j as it is and keeps the three terms small: in float32 their
    cancellation would otherwise cost the digits of the features' magnitude."""
    dim, channels = int(centred.shape[1]), int(values.shape[1])
    columns = ops.reshape(centred[:, :, None] * values[:, None, :], (-1, dim * channels))
    spread = ops.reshape(lattice.filter(columns, reverse=reverse), (-1, dim, channels))
    own = ops.reduce_sum(upstream * filtered, 1) + ops.reduce_sum(values * transposed, 1)  # (P,)
    cross = ops.row_matvec(spread, upstream)  # (P, d): one small product per row, not a (P, d, C) temporary
    return ops.reduce_sum(centred * centred * own[:, None] - 2.0 * centred * cross, 0) / widths


def elevation_scale(dim, dtype):
    """(d,) diagonal of the elevation matrix E times the inverse std of the blur (Adams et
    al. 2010, pp. 5-6), rounded as pydensecrf rounds it (inv_std_dev to `dtype` first)."""
    inv_std_dev = np.float64(np.dtype(dtype).type(np.sqrt(2.0 / 3.0) * (dim + 1)))
    return (1.0 / np.sqrt((np.arange(dim) + 1.0) * (np.arange(dim) + 2.0)) * inv_std_dev).astype(dtype)


def slicing_alpha(dim):
    """pydensecrf's "magic" constant: the gain of the blur over a unit Gaussian."""
    return 1.0 / (1.0 + 2.0 ** -dim)


def enclosing_simplices(ops: Ops, features):
    """(keys (P, d+1, d) int64, weights (P, d+1)): the lattice coordinates of the d+1
    vertices of each point's enclosing simplex (the last coordinate is implied by the
    zero sum) and its barycentric weights."""
    dim = int(features.shape[1])
    dtype = features.dtype
    scaled = features * ops.constant(elevation_scale(dim, ops.dtype_name(features)), dtype, features)
    # Elevation y = E f: y_0 = sum_j c_j, y_j = sum_{m>=j} c_m - j c_{j-1}.
    zeros = ops.zeros_like(scaled[:, :1])
    steps = ops.constant(np.arange(1, dim + 1), dtype, features)
    elevated = ops.concat_columns([ops.reverse_cumsum(scaled), zeros]) - ops.concat_columns([zeros, steps * scaled])

    # Nearest remainder-0 point: round y / (d+1) to the nearest integer, halves to even.
    down = ops.constant(1.0 / (dim + 1), dtype, features)
    rounded = ops.round_half_even(elevated * down)
    remainder0 = rounded * (dim + 1)
    plane_offset = ops.to_int64(ops.reduce_sum(rounded, 1))

    # Rank of each coordinate in decreasing order of y - remainder0; ties by index.
    rank = ops.argsort(ops.argsort(-(elevated - remainder0))) + plane_offset[:, None]
    shift = ops.to_int64(rank < 0) - ops.to_int64(rank > dim)
    rank = rank + (dim + 1) * shift
    remainder0 = remainder0 + ops.cast_like((dim + 1) * shift, remainder0)

    offsets = (elevated - remainder0) * down
    position = dim - rank
    barycentric = ops.scatter_columns(position, offsets, dim + 2) - ops.scatter_columns(position + 1, offsets, dim + 2)
    weights = ops.concat_columns([barycentric[:, :1] + (1 + barycentric[:, dim + 1:]), barycentric[:, 1:dim + 1]])

    # Vertex k of the simplex: remainder0 plus the canonical simplex's vertex k permuted by the
    # rank; its coordinate j is k, less d+1 where rank_j > d - k.
    vertex = np.arange(dim + 1)[None, :, None]
    wraps = ops.to_int64(rank[:, None, :dim] > ops.constant(dim - vertex, rank.dtype, rank))
    keys = ops.to_int64(remainder0)[:, None, :dim] + ops.constant(vertex, rank.dtype, rank) - (dim + 1) * wraps
    return keys, weights


def unique_rows(ops: Ops, rows):
    """(unique rows (M, d), index of each of the (n, d) int64 `rows` among them)."""
    low = ops.reduce_min(rows, 0)
    span = ops.reduce_max(rows, 0) - low + 1
    fits, radix = _mixed_radix(ops, span)

    def packed():
        # One int64 per row: mixed radix over the observed ranges; unique is then 1-D.
        codes, inverse = ops.unique(_encode(ops, rows, low, radix))
        return codes[:, None] // radix % span + low, inverse

    # ops.cond, not a Python `if`: in a TF graph `fits` is symbolic, and the row path must
    # still be taken when the rows do not fit one int64.
    return ops.cond(fits, packed, lambda: ops.unique_rows(rows))


def blur_neighbors(ops: Ops, unique_keys):
    """(d+1, 2, M) index of each vertex's neighbours along every lattice direction, -1 if absent.

    Along direction j < d the neighbours differ by -1/+1 in every coordinate and by
    +d/-d in coordinate j; along direction d by -1/+1 everywhere."""
    dim = int(unique_keys.shape[1])
    shifts = np.array([[step if axis != direction else -step * dim for axis in range(dim)]
                       for direction in range(dim + 1) for step in (-1, 1)])
    shifts = ops.constant(shifts, unique_keys.dtype, unique_keys)
    # No neighbour is more than d away in any coordinate: one packing, widened by d, codes them all.
    low = ops.reduce_min(unique_keys, 0) - dim
    span = ops.reduce_max(unique_keys, 0) + dim - low + 1
    fits, radix = _mixed_radix(ops, span)

    def packed():
        codes = _encode(ops, unique_keys, low, radix)
        # The code is linear in the key: a shift moves every code by the shift's code.
        moves = ops.reduce_sum(shifts * radix, 1)
        return codes, ops.reshape(moves[:, None] + codes[None, :], (-1,))

    def rows():
        queries = ops.concat_rows([unique_keys + shifts[index] for index in range(2 * (dim + 1))])
        _, ids = ops.unique_rows(ops.concat_rows([unique_keys, queries]))
        count = ops.num_rows(unique_keys)
        return ids[:count], ids[count:]

    table, wanted = ops.cond(fits, packed, rows)
    return ops.reshape(_find(ops, table, wanted), (dim + 1, 2, -1))


def _mixed_radix(ops: Ops, span):
    """(whether codes with digits in [0, span) fit one int64, the (d,) radix of each digit)."""
    fits = ops.reduce_sum(ops.log(ops.to_float64(span)), 0) < 62 * np.log(2.0)
    radix = ops.concat_rows([ops.reverse_cumprod(span[1:]), ops.constant([1], span.dtype, span)])
    return fits, radix


def _encode(ops: Ops, rows, low, radix):
    return ops.reduce_sum((rows - low) * radix, 1)


def _find(ops: Ops, table, wanted):
    """Index of each of the 1-D `wanted` in the 1-D `table` of distinct values, -1 if absent."""
    order = ops.argsort(table)
    ordered = ops.gather(table, order)
    position = ops.minimum(ops.searchsorted(ordered, wanted), ops.num_rows(table) - 1)
    return ops.where(ops.gather(ordered, position) == wanted, ops.gather(order, position), -1)


def check_features(shape, dtype_name, *, op, finite=None):
    """(P, d) features with d >= 1, P >= 1, a floating dtype; `finite()` (when given) says
    whether they are finite. A dimension None is unknown (a TF graph)."""
    if len(shape) != 2 or shape[1] is None or shape[1] < 1:
        known = "a known " if len(shape) == 2 and shape[1] is None else ""
        raise ValueError(f"{op}: argument 'features' must be 2-D (P, d) with {known}d >= 1, got shape {shape}")
    if dtype_name not in SUPPORTED_FLOAT_DTYPES:
        raise TypeError(f"{op}: argument 'features' must have a floating dtype {SUPPORTED_FLOAT_DTYPES}, "
                        f"got {dtype_name}")
    if shape[0] == 0:
        raise ValueError(f"{op}: argument 'features' must not be empty, got shape {shape}")
    if finite is not None and not finite():
        raise ValueError(f"{op}: argument 'features' must be finite (no NaN or inf)")


def check_values(shape, features_shape, *, floating, dtype_name, op, finite=None):
    """(P, C) values to filter on the lattice of features of `features_shape`."""
    if len(shape) != 2 or None not in (shape[0], features_shape[0]) and shape[0] != features_shape[0]:
        raise ValueError(f"{op}: argument 'values' must have shape ({features_shape[0]}, C) to match "
                         f"'features' {features_shape}, got {shape}")
    if not floating:
        raise TypeError(f"{op}: argument 'values' must have a floating dtype, got {dtype_name}")
    if finite is not None and not finite():
        raise ValueError(f"{op}: argument 'values' must be finite (no NaN or inf)")


def check_filter_values(shape, num_points):
    """(P, C) values for PermutohedralLattice.filter; num_points None where it is symbolic."""
    if len(shape) != 2 or None not in (shape[0], num_points) and shape[0] != num_points:
        expected = "P" if num_points is None else num_points
        raise ValueError(f"PermutohedralLattice.filter: argument 'values' must have shape ({expected}, C), "
                         f"got {shape}")

"""pycaffe's Net and Blob on torch: a net built from a .prototxt layer by layer (impls.caffe._layers),
its blobs' data as writable NumPy arrays, its weights from a .caffemodel (impls.port.caffe, with the
loaders' report and strictness), run on the CPU or a CUDA device as pycaffe's set_mode_* chose."""

from __future__ import annotations

import collections
import logging
import os
import threading

import numpy as np
import torch

from impls.caffe import _definition, _layers
from impls.caffe._definition import TEST, TRAIN
from impls.port import _loading
from impls.port.caffe import CaffeModel, file_weights, shape_matches

LOG = logging.getLogger("impls.caffe")

# pycaffe's mode and device are per thread (Caffe's singleton is thread-local).
_MODE = threading.local()


def set_mode_cpu() -> None:
    """Run nets on the CPU (the default), as caffe.set_mode_cpu()."""
    _MODE.device = "cpu"


def set_mode_gpu() -> None:
    """Run nets on the CUDA device chosen by set_device (0 by default), as caffe.set_mode_gpu();
    a RuntimeError if torch sees no CUDA device."""
    if not torch.cuda.is_available():
        raise RuntimeError("impls.caffe.set_mode_gpu: torch sees no CUDA device (torch.cuda.is_available() is "
                           "False); set_mode_cpu() runs on the CPU")
    _MODE.device = f"cuda:{getattr(_MODE, 'index', 0)}"


def set_device(index: int) -> None:
    """The CUDA device set_mode_gpu uses, as caffe.set_device(index)."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"impls.caffe.set_device: argument 'index' must be a non-negative integer, got {index!r}")
    _MODE.index = index
    if getattr(_MODE, "device", "cpu").startswith("cuda"):
        _MODE.device = f"cuda:{index}"


def current_device() -> torch.device:
    return torch.device(getattr(_MODE, "device", "cpu"))


class Blob:
    """A blob: `data` is a writable NumPy array (float32, NCHW) that the net reads and writes, as
    pycaffe's. On a GPU the array is a host copy kept in step as Caffe's SyncedMemory keeps it:
    reading `data` brings the device's values over and marks the host copy as the newer (what you
    write into it goes back to the device before the next forward)."""

    def __init__(self, shape=()):
        self._host = np.zeros(tuple(shape), np.float32)
        self._device_tensor = None
        self._head = "host"  # which copy is newer: "host", "device" or "both"
        self._version = 0  # counts the times the data may have changed (a layer's prepared copy follows it)
        self._prepared = None  # (device, version, tensor): a layer's own layout of this parameter

    @classmethod
    def holding(cls, array: np.ndarray) -> Blob:
        """A blob whose data is `array` itself (float32, not copied)."""
        blob = cls()
        blob._host = array
        return blob

    @property
    def data(self) -> np.ndarray:
        if self._head == "device":
            self._host = self._device_tensor.detach().cpu().numpy()
        self._head = "host"  # what is written into the array is the newest (Caffe's mutable_cpu_data)
        self._version += 1
        return self._host

    @data.setter
    def data(self, value):
        self.data[...] = value

    @property
    def diff(self):
        raise AttributeError("impls.caffe runs nets forward only: blobs have no diff (no backward pass)")

    @property
    def shape(self) -> tuple:
        return tuple(self._device_tensor.shape if self._head == "device" else self._host.shape)

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def _legacy(self, axis):
        shape = self.shape
        if len(shape) > 4:
            raise ValueError(f"a blob of shape {shape} has more than the legacy num/channels/height/width axes")
        return ((1,) * (4 - len(shape)) + shape)[axis] if len(shape) < 4 else shape[axis]

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape) -> None:
        """New dimensions (zeros where the count changes, as the data is then reallocated); the net
        re-derives the other blobs' shapes at its next forward (or net.reshape())."""
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"Blob.reshape: argument 'shape' must be non-negative integers, got {shape}")
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return
        data = self.data
        self._host = data.reshape(shape) if data.size == int(np.prod(shape)) else np.zeros(shape, np.float32)
        self._device_tensor, self._head = None, "host"
        self._version += 1

    # -- the net's side --------------------------------------------------------------------------

    def tensor(self, device: torch.device) -> torch.Tensor:
        if device.type == "cpu":
            if self._head == "device":
                self.data  # noqa: B018 (brings the device's values to the host)
            self._device_tensor = None
            if not self._host.flags.writeable or self._host.dtype != np.float32:
                self._host = np.array(self._host, np.float32)
            return torch.from_numpy(self._host)
        if self._head == "host" or self._device_tensor is None or self._device_tensor.device != device:
            self._device_tensor = torch.from_numpy(np.ascontiguousarray(self._host, np.float32)).to(device)
            self._head = "both"
        return self._device_tensor

    def prepared(self, device: torch.device, prepare) -> torch.Tensor:
        """`prepare(tensor)` of the blob on `device` (a layer's own layout of a parameter), kept until
        the data may have changed (read through `data`, reshaped, set) or the device changes."""
        cached = self._prepared
        if cached is not None and cached[0] == device and cached[1] == self._version:
            return cached[2]
        tensor = prepare(self.tensor(device))
        self._prepared = (device, self._version, tensor)
        return tensor

    def set_tensor(self, tensor: torch.Tensor) -> None:
        self._version += 1
        if tensor.device.type == "cpu":
            self._host, self._device_tensor, self._head = tensor.detach().numpy(), None, "host"
        else:
            self._device_tensor, self._head = tensor.detach(), "device"

    def shares(self, tensor: torch.Tensor) -> bool:
        held = self._device_tensor if self._head == "device" else (self._host if self._host.size else None)
        if held is None:
            return False
        pointer = held.data_ptr() if isinstance(held, torch.Tensor) else held.__array_interface__["data"][0]
        return pointer == tensor.data_ptr()

    def __repr__(self):
        return f"<impls.caffe.Blob {self.shape}>"


class Net:
    """A Caffe net built from a .prototxt, as pycaffe's caffe.Net:

        net = impls.caffe.Net("deploy.prototxt", "weights.caffemodel", impls.caffe.TEST)
        net = impls.caffe.Net("deploy.prototxt", impls.caffe.TEST, weights="weights.caffemodel")

    `blobs` (ordered, name -> Blob), `params` (layer -> [Blob] of its weights, in Caffe's layouts),
    `inputs`, `outputs`, `layers`, `layer_dict`, `top_names`, `bottom_names`, `forward(**inputs)`
    (the output blobs' data), `forward_all`, `reshape()`, `copy_from(weights)`.

    The layer types that run are those of impls.caffe._layers.LAYER_TYPES; an unknown type is an
    error naming the layer before anything is built, a layer that reads a dataset too (see
    impls.caffe.deploy), and a training-only layer (a loss, Accuracy) is skipped in TEST with a
    notice (logged on "impls.caffe"; `net.skipped` lists them). Weights load with the loaders'
    strictness (`strict=True`): a weighted layer the file lacks, a file layer with blobs the net
    lacks, a wrong blob count or shape raise, naming each, before anything is copied (Caffe
    ignores the first two: `strict=False` does too, and keeps such layers' fillers). Without
    weights, parameters take their prototxt fillers (the random ones seeded by the layer's name).

    It runs on the CPU, or on CUDA after impls.caffe.set_mode_gpu() (the mode at forward time
    counts, as in Caffe), with torch's threads (torch.set_num_threads). On the CPU, 3x3 convolutions
    with many channels use Winograd's F(4x4, 3x3) (impls.caffe._winograd: about twice as fast, 5e-6
    of the largest output from the direct convolution); `winograd=False` uses oneDNN's everywhere.
    A net is safe to call from several threads (one forward at a time)."""

    def __init__(self, network_file, *args, weights=None, phase=None, level: int = 0, stages=None,
                 strict: bool = True, winograd: bool = True):
        weights, phase = _signature(args, weights, phase)
        self._lock = threading.RLock()
        self.phase = phase
        if not isinstance(winograd, bool):
            raise TypeError(f"Net: argument 'winograd' must be a bool, got {winograd!r}")
        self.winograd = winograd
        definition = _definition.load_definition(network_file, phase=phase, level=level, stages=stages or (),
                                                 known_types=frozenset(_layers.LAYER_TYPES))
        self.name, self.skipped, self._source = definition.name, list(definition.skipped), definition.source
        self.blobs = collections.OrderedDict((name, Blob(shape)) for name, shape in definition.inputs)
        self.inputs = [name for name, _ in definition.inputs]
        self.layers, self.params = [], collections.OrderedDict()
        self.top_names, self.bottom_names = collections.OrderedDict(), collections.OrderedDict()
        self._build(definition, fill=weights is None)
        if weights is not None:  # the file's values go straight into the blobs; fillers only for what it lacks
            self.copy_from(weights, strict=strict, fill_missing=True)

    # -- building ----------------------------------------------------------------------------------

    def _build(self, definition, *, fill: bool):
        producers, available = {}, dict.fromkeys(self.inputs)
        for layer_def in definition.layers:
            missing = [b for b in layer_def.bottoms if b not in self.blobs]
            if missing:
                raise ValueError(f"{layer_def.where}: layer {layer_def.name!r} reads blob(s) {missing}, which no "
                                 f"earlier layer or input makes")
            shapes = [self.blobs[b].shape for b in layer_def.bottoms]
            layer = _layers.LAYER_TYPES[layer_def.type](layer_def, shapes, self.phase)
            if not self.winograd and getattr(layer, "winograd", False):
                layer.winograd = False
            if isinstance(layer, _layers.Crop) and layer.automatic:
                layer.set_automatic_offsets(self._automatic_crop(layer, producers))
            self.layers.append(layer)
            self.top_names[layer.name], self.bottom_names[layer.name] = list(layer_def.tops), list(layer_def.bottoms)
            if layer.params:
                if layer.name in self.params:
                    raise ValueError(f"{layer_def.where}: two layers with weights are named {layer.name!r}")
                self.params[layer.name] = [Blob.holding(_layers.fill(spec, layer.name, index) if fill
                                                        else np.empty(spec.shape, np.float32))
                                           for index, spec in enumerate(layer.params)]
            for bottom in layer_def.bottoms:
                if bottom not in layer_def.tops:
                    available.pop(bottom, None)
            for top, shape in zip(layer_def.tops, self._run_shapes(layer, shapes), strict=True):
                if top not in self.blobs:
                    self.blobs[top] = Blob(shape)
                else:
                    self.blobs[top].reshape(*shape)
                producers.setdefault(top, layer)
                available[top] = None
        self.outputs = list(available)

    def _run_shapes(self, layer, shapes):
        try:
            return layer.top_shapes(shapes)
        except (RuntimeError, ValueError) as error:
            if isinstance(error, ValueError) and str(error).startswith(layer.definition.where):
                raise
            raise layer.error(f"cannot run on bottoms of shapes {[tuple(s) for s in shapes]} ({error})") from None

    def _automatic_crop(self, crop, producers):
        """The CRF-RNN fork's Crop offsets: walk back from both bottoms (first bottoms only) to the
        blob they share, compose each layer's coordinate map, and read the offset of the map from
        bottom 0's coordinates to bottom 1's (its scale must be 1 and its offset a non-positive
        integer, as the fork checks)."""
        first, second = crop.definition.bottoms
        path, blob = {first}, first
        while blob in producers and producers[blob].definition.bottoms:
            blob = producers[blob].definition.bottoms[0]
            path.add(blob)
        meeting = second
        while meeting not in path:
            if meeting not in producers or not producers[meeting].definition.bottoms:
                raise crop.error(f"cannot derive its offsets: bottoms {first!r} and {second!r} share no blob")
            meeting = producers[meeting].definition.bottoms[0]
        maps = [self._coordinates(blob, meeting, producers, crop) for blob in (first, second)]
        offsets = []
        for (scale0, shift0), (scale1, shift1) in zip(*maps, strict=True):
            scale, shift = scale1 / scale0, shift1 - scale1 * shift0 / scale0  # bottom 0 -> bottom 1
            if abs(scale - 1) > 1e-9 or shift > 1e-9 or abs(shift - round(shift)) > 1e-9:
                raise crop.error(f"cannot derive its offsets: the map from {first!r} to {second!r} is "
                                 f"{scale:g} x + {shift:g}, not a shift by a non-positive integer")
            offsets.append(int(round(-shift)))
        return offsets

    @staticmethod
    def _coordinates(blob, meeting, producers, crop):
        """[(a, b)] per spatial axis of the map from `meeting`'s coordinates to `blob`'s."""
        composed = [(1.0, 0.0), (1.0, 0.0)]
        while blob != meeting:
            layer = producers[blob]
            step = layer.coord_map()
            if step is None:
                raise crop.error(f"cannot derive its offsets through layer {layer.name!r} ({layer.type}), which "
                                 f"has no coordinate map")
            composed = [(a * c, a * d + b) for (a, b), (c, d) in zip(composed, step, strict=True)]
            blob = layer.definition.bottoms[0]
        return composed

    # -- weights -------------------------------------------------------------------------------------

    def copy_from(self, weights, *, strict: bool = True, fill_missing: bool = False):
        """Loads a .caffemodel into the net's parameters (pycaffe's copy_from); returns the report.
        (`fill_missing`: the net's blobs are not filled yet; layers the file lacks get their fillers.)"""
        strict = _loading.check_strict(strict, op="Net")
        if not isinstance(weights, str | os.PathLike):
            raise TypeError(f"Net: argument 'weights' must be a .caffemodel path, got {weights!r} of type "
                            f"{type(weights).__name__}")
        model = CaffeModel.read(weights, op="Net")
        layers = {name: file_weights(layer, by_role=False) for name, layer in model.weights(op="Net").items()}
        with self._lock:
            self.report = _loading.load(layers, _NetTarget(self), path=model.path, op="Net", strict=strict,
                                        exclude=frozenset(), rename={})
        for name, _ in self.report.missing:
            LOG.warning("impls.caffe: layer %r is not in %s: it keeps its filler's values", name, model.path)
        if fill_missing:
            loaded = {target for _, target, _, _ in self.report.loaded}
            for layer in self.layers:
                if layer.name in self.params and layer.name not in loaded:
                    for index, (blob, spec) in enumerate(zip(self.params[layer.name], layer.params, strict=True)):
                        blob.data[...] = _layers.fill(spec, layer.name, index)
        return self.report

    # -- running -------------------------------------------------------------------------------------

    @property
    def layer_dict(self):
        return collections.OrderedDict((layer.name, layer) for layer in self.layers)

    @property
    def _layer_names(self):
        return [layer.name for layer in self.layers]

    def reshape(self) -> None:
        """Re-derives every blob's shape from the inputs' (pycaffe's net.reshape())."""
        with self._lock:
            for layer in self.layers:
                shapes = [self.blobs[b].shape for b in layer.definition.bottoms]
                self._check_params(layer, shapes)
                for top, shape in zip(layer.definition.tops, self._run_shapes(layer, shapes), strict=True):
                    self.blobs[top].reshape(*shape)

    def _check_params(self, layer, shapes):
        """The bottoms a layer's weights were made for (a net reshaped to other channels is refused)."""
        if layer.params:
            rebuilt = type(layer)(layer.definition, shapes, self.phase)
            wrong = [(blob.shape, spec.shape) for blob, spec in zip(self.params[layer.name], rebuilt.params,
                                                                     strict=True) if blob.shape != spec.shape]
            if wrong:
                raise layer.error(f"has weights of shapes {[w for w, _ in wrong]} but bottoms of shapes "
                                  f"{[tuple(s) for s in shapes]} need {[s for _, s in wrong]}")

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Runs the layers from `start` to `end` (names; default all) and returns {output: data} of
        the net's outputs and of `blobs` (names). Keyword arguments set input blobs first (their
        shapes must equal the blobs'; Blob.reshape changes them)."""
        with self._lock:
            for name, value in kwargs.items():
                self._set_input(name, value)
            first, last = self._range(start, end)
            device = current_device()
            # Blobs and prepared weights outlive the call: plain tensors even under a caller's
            # inference_mode (whose tensors could not be updated in place later).
            with torch.inference_mode(False), torch.no_grad():
                for layer in self.layers[first:last + 1]:
                    self._forward_layer(layer, device)
            names = list(self.outputs if end is None else self.layers[last].definition.tops)
            names += [name for name in (blobs or []) if name not in names]
            return {name: self.blobs[name].data for name in names}

    def forward_all(self, blobs=None, **kwargs):
        """pycaffe's forward_all: the inputs in batches of the input blobs' size, the outputs (and
        `blobs`) concatenated."""
        names = list(self.outputs) + [b for b in (blobs or []) if b not in self.outputs]
        if not kwargs:
            return {name: array.copy() for name, array in self.forward(blobs).items()}
        counts = {len(value) for value in kwargs.values()}
        if len(counts) != 1:
            raise ValueError(f"Net.forward_all: the inputs must have one length, got {sorted(counts)}")
        total, batch = counts.pop(), self.blobs[next(iter(kwargs))].shape[0]
        collected = {name: [] for name in names}
        for begin in range(0, total, batch):
            chunk = {}
            for name, value in kwargs.items():
                part = np.asarray(value[begin:begin + batch], np.float32)
                if len(part) < batch:  # the last batch: padded as pycaffe pads it, then cut
                    part = np.concatenate([part, np.zeros((batch - len(part), *part.shape[1:]), np.float32)])
                chunk[name] = part
            out = self.forward(blobs, **chunk)
            for name in names:
                collected[name].append(out[name].copy())
        return {name: np.concatenate(parts)[:total] for name, parts in collected.items()}

    def _set_input(self, name, value):
        if name not in self.blobs:
            raise KeyError(f"Net.forward: {name!r} is not a blob of this net (its inputs: {self.inputs})")
        value = np.asarray(value)
        blob = self.blobs[name]
        if value.shape != blob.shape:
            raise ValueError(f"Net.forward: input {name!r} must have the blob's shape {blob.shape}, got "
                             f"{value.shape} (net.blobs[{name!r}].reshape(*shape) changes it)")
        blob.data[...] = value

    def _range(self, start, end):
        names = self._layer_names
        for argument, value in (("start", start), ("end", end)):
            if value is not None and value not in names:
                raise ValueError(f"Net.forward: argument '{argument}' must name a layer, got {value!r}")
        return (names.index(start) if start else 0), (names.index(end) if end else len(names) - 1)

    def _forward_layer(self, layer, device):
        bottoms = [self.blobs[name].tensor(device) for name in layer.definition.bottoms]
        params = [blob.prepared(device, lambda tensor, i=index: layer.prepare(i, tensor))
                  for index, blob in enumerate(self.params.get(layer.name, []))]
        layer.may_overwrite = not any(blob.shares(bottoms[0]) for name, blob in self.blobs.items()
                                      if name not in layer.definition.bottoms) if bottoms else False
        try:
            tops = layer.forward(bottoms, params)
        except RuntimeError as error:
            raise layer.error(f"failed on bottoms of shapes {[tuple(b.shape) for b in bottoms]}: {error}") from None
        for name, tensor in zip(layer.definition.tops, tops, strict=True):
            self.blobs[name].set_tensor(tensor)
        if isinstance(layer, _layers.BatchNorm) and not layer.global_stats and device.type != "cpu":
            for blob, tensor in zip(self.params[layer.name], params, strict=True):
                blob.set_tensor(tensor)  # the moving averages it updated on the device

    def __repr__(self):
        return f"<impls.caffe.Net {self.name!r}: {len(self.layers)} layers, inputs {self.inputs}>"


def _signature(args, weights, phase):
    """(weights, phase) of pycaffe's two forms: Net(file, phase[, weights=]) and Net(file, weights, phase)."""
    if len(args) == 1:
        phase = args[0] if phase is None else phase
    elif len(args) == 2:
        if weights is not None or phase is not None:
            raise TypeError("Net: give the weights and the phase once each")
        weights, phase = args
    elif len(args) > 2:
        raise TypeError(f"Net takes (network_file, phase) or (network_file, weights, phase), got {len(args) + 1} "
                        f"positional arguments")
    if phase not in (TRAIN, TEST) or isinstance(phase, bool):
        raise ValueError(f"Net: argument 'phase' must be impls.caffe.TEST or impls.caffe.TRAIN, got {phase!r}")
    return weights, phase


class _NetTarget:
    """A net's parameter blobs as a loader's target (Caffe's own layouts; blobs keyed by index)."""

    def __init__(self, net):
        self.net = net
        self.layers = {name: name for name in net.params}

    def kind(self, name):
        return self.net.layer_dict[name].type

    def weight_names(self, name):
        return tuple(str(i) for i in range(len(self.net.params[name])))

    def difference(self, name, weights):
        blobs = self.net.params[name]
        if len(weights) != len(blobs):
            return f"Incompatible number of blobs: the file has {len(weights)}, the net {len(blobs)}"
        wrong = [f"blob {key}: {blob.shape}{' (legacy 4-D)' if blob.legacy else ''} in the file vs "
                 f"{blobs[int(key)].shape} in the net" for key, blob in weights.items()
                 if not shape_matches(blob, blobs[int(key)].shape)]
        return ", ".join(wrong)

    def load(self, name, weights):
        done = []
        for key, blob in weights.items():
            target = self.net.params[name][int(key)]
            target.data[...] = np.asarray(blob.values, np.float32).reshape(target.shape)
            done.append((key, target.shape))
        return tuple(done)

"""Keras 2 HDF5 weight files written with h5py alone, the way Keras 2 wrote them, and the seeded
weights of crfasrnn_keras's network (its real file, crfrnn_keras_model.h5, cannot be downloaded
here). The tests, the README-commands test and reference/crfasrnn_oracle.py use them.

The layout of Keras 2's `model.save_weights("x.h5")` (keras/engine/saving.py, and tf.keras'
hdf5_format.py, which kept it):

    /                              attrs: layer_names  [b"input_1", b"conv1_1", ...] every layer,
                                          weighted or not, in model.layers order
                                          backend      b"tensorflow"
                                          keras_version b"2.2.4"
    /conv1_1                       group per layer; attrs: weight_names [b"conv1_1/kernel:0",
                                          b"conv1_1/bias:0"] (empty for a layer without weights)
    /conv1_1/conv1_1/kernel:0      dataset per weight, at the group path + its weight name (the
                                   name's "/" makes the inner groups), in the Keras layout
    /rpn_model/rpn_conv_shared/... a nested model: one group for it, its layers' weights under it

`model.save("x.h5")` writes the same tree under a `model_weights` group (root attrs then hold
model_config and training_config as JSON). An attribute over HDF5's 64 KB object-header limit
is split into numbered attributes: layer_names0, layer_names1, ...
"""

from __future__ import annotations

import pathlib

import numpy as np

# What HDF5 can hold in one object header (Keras' HDF5_OBJECT_HEADER_LIMIT).
ATTRIBUTE_LIMIT = 64512
CRFASRNN_SEED = 2017


def write_keras2_h5(path, layers, *, layout: str = "save_weights", split_attributes: bool = False,
                    keras_version: str = "2.2.4") -> pathlib.Path:
    """Writes `layers`, [(layer name, [(weight name such as "conv1_1/kernel:0", array)])] (an
    empty list for a layer without weights), as Keras 2 did; a shape tuple instead of an array
    makes a dataset without data (reads give zeros; the file stays small). `layout` "save_weights" or "save"
    (the weights under model_weights); `split_attributes` forces the numbered-attribute form
    that Keras used for attributes over 64 KB."""
    import h5py

    path = pathlib.Path(path)
    with h5py.File(path, "w") as file:
        if layout == "save":
            file.attrs["model_config"] = b'{"class_name": "Model", "config": {}}'
            file.attrs["keras_version"] = keras_version.encode()
            file.attrs["backend"] = b"tensorflow"
            root = file.create_group("model_weights")
        elif layout == "save_weights":
            root = file
        else:
            raise ValueError(f"write_keras2_h5: layout must be 'save_weights' or 'save', got {layout!r}")
        _names_attribute(root, "layer_names", [name for name, _ in layers], split_attributes)
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = keras_version.encode()
        for name, weights in layers:
            group = root.create_group(name)
            _names_attribute(group, "weight_names", [weight for weight, _ in weights], split_attributes)
            for weight, value in weights:
                if isinstance(value, tuple):  # a shape: a float32 dataset HDF5 allocates nothing for
                    group.create_dataset(weight, shape=value, dtype=np.float32)
                else:
                    group.create_dataset(weight, data=value)
    return path


def _names_attribute(group, key, names, split):
    encoded = np.array([name.encode("utf8") for name in names])
    chunks = 1
    if split:
        chunks = max(2, len(names))
    else:
        while encoded.nbytes / chunks > ATTRIBUTE_LIMIT:
            chunks += 1
    if chunks == 1:
        # A list, as Keras 2 passes it: h5py 3 stores it as variable-length strings (the real
        # file's type, reference/crfasrnn_keras_h5_layout.json); [] as an empty float64 array.
        group.attrs[key] = [name.encode("utf8") for name in names]
        return
    for index, chunk in enumerate(np.array_split(encoded, chunks)):
        group.attrs[f"{key}{index}"] = chunk


def crfasrnn_weights(seed: int = CRFASRNN_SEED, num_classes: int = 21) -> list[tuple[str, list]]:
    """Seeded weights of crfasrnn_keras's network in its Keras 2 names and layout, every layer
    (weightless ones with []) in the order its model lists them: [(layer, [(weight name, float32
    array)])]. Convolutions draw He-uniform kernels and small biases, the scoring layers are
    scaled so that the logits have a trained FCN's range (a few units); the transposed
    convolutions are the bilinear kernel plus noise; the CRF's matrices are crfasrnn_keras's
    initial values (I, I, -I) plus noise. The legacy RandomState draws in the order of the
    table, so the values are the same on every platform and NumPy version."""
    from impls._models import crfasrnn_layers
    from impls._sampling import bilinear_kernel

    random = np.random.RandomState(seed)
    weighted = {}
    for layer, kind, shapes in crfasrnn_layers(num_classes):
        values = []
        for weight, shape in shapes:
            if kind == "CrfRnn":
                base = {"compatibility_matrix": -1.0}.get(weight, 1.0) * np.eye(num_classes)
                value = base + _uniform(random, shape, 0.05)
            elif weight == "bias":
                value = _uniform(random, shape, 0.05)
            elif kind == "transposed convolution":
                factor = shape[0] // 2
                diagonal = np.eye(num_classes)[None, None] * bilinear_kernel(factor)[:, :, None, None]
                value = diagonal + _uniform(random, shape, 0.01)
            else:
                fan_in = shape[0] * shape[1] * shape[2]
                gain = 0.025 if layer.startswith("score") else 1.0
                value = _uniform(random, shape, gain * np.sqrt(6.0 / fan_in))
            values.append((f"{layer}/{weight}:0", value.astype(np.float32)))
        weighted[layer] = values
    return [(layer, weighted.get(layer, [])) for layer in crfasrnn_layer_order()]


def crfasrnn_layer_order() -> list[str]:
    """Every layer of crfasrnn_keras's model, in Keras 2's model.layers order: by decreasing depth
    from the output, so score-pool4 (behind its Cropping2D) comes before score2, and score-pool3
    before score4, as the real `save_weights` file lists them (reference/crfasrnn_keras_h5_layout.json,
    written by Keras 2 itself). The weightless layers carry Keras <= 2.2.4's one-based automatic
    names (zero_padding2d_1, ...; tf.keras counts from zero_padding2d), as the original's 2017
    file, which this one stands in for, did."""
    order = ["input_1", "zero_padding2d_1"]
    for block in range(1, 6):
        convs = 2 if block <= 2 else 3
        order += [f"conv{block}_{i}" for i in range(1, convs + 1)] + [f"pool{block}"]
    order += ["fc6", "dropout_1", "fc7", "dropout_2", "score-fr", "score-pool4", "score2", "cropping2d_1", "add_1",
              "score-pool3", "score4", "cropping2d_2", "add_2", "upsample", "cropping2d_3", "crfrnn"]
    return order


def _uniform(random, shape, limit):
    """Uniform in [-limit, limit), drawn in chunks (fc6 alone is 103 M values) from the stream
    in order, which gives the same values as one draw."""
    size, chunk = int(np.prod(shape)), 1 << 23
    out = np.empty(size, dtype=np.float32)
    for start in range(0, size, chunk):
        stop = min(size, start + chunk)
        out[start:stop] = (2.0 * random.random_sample(stop - start) - 1.0) * limit
    return out.reshape(shape)


def write_crfasrnn_h5(path, seed: int = CRFASRNN_SEED, **options) -> pathlib.Path:
    """crfasrnn_keras's network with seeded weights as a Keras 2 `save_weights` file (534 MB)."""
    return write_keras2_h5(path, crfasrnn_weights(seed), **options)


def crfasrnn_skeleton(num_classes: int = 21) -> list[tuple[str, list]]:
    """crfasrnn_keras's file as `crfasrnn_weights` lists it, with shapes instead of values: a
    few-kB file of the right structure, for tests of what the reader refuses."""
    from impls._models import crfasrnn_layers

    shapes = {layer: [(f"{layer}/{weight}:0", shape) for weight, shape in weights]
              for layer, _, weights in crfasrnn_layers(num_classes)}
    return [(layer, shapes.get(layer, [])) for layer in crfasrnn_layer_order()]

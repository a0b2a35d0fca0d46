"""Reading Caffe's binary weight files without Caffe (impls.port.read_caffemodel): every encoding
Caffe has written, the forks' fields, files of any size without a copy, and bad files refused with
one line that says what is wrong and where."""

from __future__ import annotations

import numpy as np
import pytest

from impls import port
from impls.port import _wire
from impls.port.caffe import CaffeModel
from tests.caffe_files import Chunks, key, layer_message, varint, write_caffemodel

ENCODINGS = [dict(version="V2", shapes="blobshape", floats="packed"), dict(version="V2", shapes="legacy"),
             dict(version="V2", floats="unpacked"), dict(version="V2", floats="double"),
             dict(version="V1", shapes="legacy"), dict(version="V1", shapes="blobshape", floats="unpacked"),
             dict(version="V1", floats="double")]


def _layers(seed=0):
    rng = np.random.default_rng(seed)
    return [("data", "Data", []),
            ("conv1", "Convolution", [rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                                      rng.standard_normal(4).astype(np.float32)]),
            ("relu1", "ReLU", []),
            ("fc", "InnerProduct", [rng.standard_normal((5, 36)).astype(np.float32)]),
            ("loss", "SoftmaxWithLoss", [])]


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: "-".join(e.values()))
def test_feature_every_encoding_reads_the_same_values(encoding, tmp_path):
    layers = _layers()
    path = write_caffemodel(tmp_path / "net.caffemodel", layers, **encoding)
    read = port.read_caffemodel(path)
    assert list(read) == [name for name, _, _ in layers]
    for name, _, blobs in layers:
        assert len(read[name]) == len(blobs)
        for found, expected in zip(read[name], blobs, strict=True):
            legacy = encoding.get("shapes", "blobshape" if encoding["version"] == "V2" else "legacy") == "legacy"
            shape = (1,) * (4 - expected.ndim) + expected.shape if legacy else expected.shape
            assert found.shape == shape
            assert found.dtype == (np.float64 if encoding.get("floats") == "double" else np.float32)
            np.testing.assert_array_equal(found.reshape(expected.shape), expected)
    model = CaffeModel.read(path)
    assert model.format == encoding["version"]
    assert [layer.type for layer in model.layers] == [type_ for _, type_, _ in layers]


def test_feature_v1_types_include_the_crfrnn_fork_and_unknown_numbers(tmp_path):
    """The fork's enum (CROP 40, MULTI_STAGE_MEANFIELD 42) reads as V2 type names; a number no Caffe
    we know gave is kept by number and still read (loading matches by name)."""
    net = Chunks()
    for name, number in (("crop", 40), ("inference1", 42), ("custom", 77)):
        net.message(2, Chunks().string(4, name).scalar(5, number))
    path = tmp_path / "v1.caffemodel"
    with open(path, "wb") as file:
        net.write(file)
    assert [layer.type for layer in CaffeModel.read(path).layers] == ["Crop", "MultiStageMeanfield", "V1 type 77"]


def test_feature_forks_fields_are_skipped(tmp_path):
    """The forks reuse field numbers (CRF-RNN's multi_stage_meanfield_param is 146, BVLC's
    recurrent_param; DeepLab's interp_param is 143, BVLC's input_param): a layer's other fields,
    whatever their numbers and wire types, are skipped without being decoded."""
    params = Chunks().add(key(3, 5) + np.float32(160).tobytes()).scalar(6, 10)  # theta_alpha, num_iterations
    extra = Chunks().message(146, params).message(143, Chunks().scalar(1, 8)).add(key(999, 1) + bytes(8))
    blobs = [np.ones((1, 1, 2, 2), np.float32)] * 3
    path = write_caffemodel(tmp_path / "fork.caffemodel", [("inference1", "MultiStageMeanfield", blobs)],
                            extra={"inference1": b"".join(extra.parts)})
    assert [b.shape for b in port.read_caffemodel(path)["inference1"]] == [(1, 1, 2, 2)] * 3


def test_feature_inner_product_transpose_is_read(tmp_path):
    path = write_caffemodel(tmp_path / "ip.caffemodel", [("fc", "InnerProduct", [np.zeros((3, 2), np.float32)])],
                            extra={"fc": key(117, 2) + varint(2) + key(6, 0) + varint(1)})
    assert CaffeModel.read(path).layers[0].transpose


def test_feature_large_files_are_viewed_in_place(tmp_path):
    """A file over protobuf's 64 MB message limit reads, and its packed blobs are read-only views of
    the memory-mapped file (not copies)."""
    big = np.arange(20_000_000, dtype=np.float32).reshape(5000, 4000)  # 80 MB
    path = write_caffemodel(tmp_path / "big.caffemodel", [("fc6", "InnerProduct", [big])])
    assert path.stat().st_size > 64 * 2 ** 20
    (blob,) = port.read_caffemodel(path)["fc6"]
    assert not blob.flags.writeable and not blob.flags.owndata
    assert blob.shape == big.shape and blob[4999, 3999] == big[4999, 3999]


def test_feature_unpacked_floats_are_read_as_one_run(tmp_path):
    values = np.random.default_rng(1).standard_normal(1_000_000).astype(np.float32)
    path = write_caffemodel(tmp_path / "unpacked.caffemodel", [("fc", "InnerProduct", [values])], floats="unpacked")
    np.testing.assert_array_equal(port.read_caffemodel(path)["fc"][0], values)


def test_feature_duplicate_weightless_names_are_one_entry(tmp_path):
    """CRF-RNN's nets have three layers named 'crop' and two named 'fuse', without blobs."""
    layers = [("crop", "Crop", []), ("conv", "Convolution", [np.ones((1, 1, 1, 1), np.float32)]),
              ("crop", "Crop", [])]
    assert list(port.read_caffemodel(write_caffemodel(tmp_path / "a.caffemodel", layers))) == ["crop", "conv"]


# ---- Bad files ---------------------------------------------------------------------------------

def _valid(tmp_path):
    return write_caffemodel(tmp_path / "good.caffemodel", _layers())


@pytest.mark.parametrize("keep", [1, 7, 40, 200, -5, -1])
def test_exception_truncated_file_names_the_truncation(keep, tmp_path):
    data = _valid(tmp_path).read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match=r"read_caffemodel: .*cut.caffemodel is truncated: .*nothing was read"):
        port.read_caffemodel(path)


@pytest.mark.parametrize("content, why", [
    (b'name: "FCN"\nlayer { name: "conv1_1" }\n', "it looks like text: a .prototxt is read by"),
    (b"\x89HDF\r\n\x1a\n" + bytes(100), "it is an HDF5 file"),
    (b"PK\x03\x04" + bytes(100), "zip archive"),
    (bytes(range(256)) * 4, "not a Caffe NetParameter"),
    (key(1, 2) + varint(3) + b"net", "it holds no layer"),
])
def test_exception_not_a_netparameter(content, why, tmp_path):
    path = tmp_path / "x.caffemodel"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=why):
        port.read_caffemodel(path)


def test_exception_corrupted_structure_is_refused(tmp_path):
    """Bytes overwritten where a layer's tag and length are: refused, not read as other layers.
    (Values overwritten inside a blob cannot be told: a .caffemodel has no checksum.)"""
    data = bytearray(_valid(tmp_path).read_bytes())
    second = data.index(b"conv1") - 6  # the conv1 layer's header, before its name
    data[second:second + 4] = b"\xff\xff\xff\xff"
    path = tmp_path / "corrupt.caffemodel"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="read_caffemodel: .*corrupt.caffemodel (is truncated|is not a Caffe "
                                         "NetParameter)"):
        port.read_caffemodel(path)


def test_feature_reading_needs_numpy_alone(tmp_path):
    import subprocess
    import sys

    from tests.inputs import module_env

    path = _valid(tmp_path)
    script = ("import sys\nfor name in ('torch', 'tensorflow', 'keras', 'h5py'):\n    sys.modules[name] = None\n"
              "from impls import port\nprint(list(port.read_caffemodel(sys.argv[1])))\n")
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            env=module_env(), timeout=120)
    assert result.returncode == 0 and "'conv1'" in result.stdout, result.stderr


def test_exception_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty, not a Caffe NetParameter"):
        port.read_caffemodel(tmp_path / "empty.caffemodel")
    with pytest.raises(FileNotFoundError, match="argument 'path' must name an existing file"):
        port.read_caffemodel(tmp_path / "missing.caffemodel")
    with pytest.raises(TypeError, match="argument 'path' must be a path"):
        port.read_caffemodel(3)


def test_exception_blob_count_differs_from_its_shape(tmp_path):
    blob = Chunks().scalar(1, 2).scalar(2, 3).scalar(3, 1).scalar(4, 1)  # legacy (2, 3, 1, 1): 6 values
    data = np.zeros(5, "<f4")
    blob.add(key(5, 2) + varint(data.nbytes)).add(data)
    layer = Chunks().string(1, "conv1").string(2, "Convolution").message(7, blob)
    path = tmp_path / "count.caffemodel"
    with open(path, "wb") as file:
        Chunks().message(100, layer).write(file)
    with pytest.raises(ValueError, match=r"blob 0 of layer 'conv1' has shape \(2, 3, 1, 1\) \(6 values\) but holds "
                                         r"5 value\(s\)"):
        port.read_caffemodel(path)


def test_exception_v0_mixed_and_ambiguous_files(tmp_path):
    v0 = Chunks().message(2, Chunks().message(1, Chunks().string(1, "conv1")))
    mixed = Chunks().message(2, Chunks().string(4, "a").scalar(5, 4)).message(100, layer_message("b", "ReLU", []))
    for name, net, why in (("v0", v0, "a V0 layer .* upgrade_net_proto_binary"),
                           ("mixed", mixed, "mixes V1 `layers` and V2 `layer`")):
        path = tmp_path / f"{name}.caffemodel"
        with open(path, "wb") as file:
            net.write(file)
        with pytest.raises(ValueError, match=why):
            port.read_caffemodel(path)
    twice = [("conv", "Convolution", [np.ones(1, np.float32)])] * 2
    with pytest.raises(ValueError, match="two layers named 'conv' with blobs; Caffe loads only the first"):
        port.read_caffemodel(write_caffemodel(tmp_path / "twice.caffemodel", twice))


def test_smoke_wire_primitives():
    assert _wire.read_varint(varint(300), 0, 2) == (300, 2)
    assert _wire.signed32(_wire.read_varint(varint(-1), 0, 10)[0]) == -1
    with pytest.raises(_wire.WireError, match="longer than 10 bytes"):
        _wire.read_varint(b"\xff" * 11, 0, 11)
    with pytest.raises(_wire.WireError, match="wire type 7"):
        list(_wire.fields(varint((1 << 3) | 7), 0, 1))

"""Reading Caffe's text format (impls.port.read_prototxt): every construct the authors' and users'
prototxts use, typed getters that name the field and the line, and syntax errors by line and column."""

from __future__ import annotations

import math

import pytest

from impls.port import prototxt
from impls.port.prototxt import Identifier, format_prototxt, parse_prototxt
from tests.caffe_files import CAFFE_FOLDER

TEXT = """
name: "FCN"   # a comment
input: 'data'
input_dim: 1
input_dim: 3
input_dim: 0x1F4
input_dim: 500
layer {
  name: "conv1_1" type: "Convolution"
  bottom: "data" top: "conv1_1"
  param { lr_mult: 1 decay_mult: 1 }, param < lr_mult: 2 decay_mult: 0 >
  convolution_param: { num_output: 64 pad: 100 kernel_size: [3] bias_term: false
                       weight_filler { type: "gaussian" std: 1e-2 } }
  include { phase: TEST }
}
layer { name: "score" type: "Crop" bottom: "a" bottom: "b" top: "score"; crop_param { axis: 2 offset: 19 } }
layer { name: 'esc' type: "Py\\"thon\\n" "Layer" python_param { param_str: '{\\'a\\': 1}' } }
values: 1.5f values: -inf values: nan values: .5 values: -3
"""


def test_feature_fields_in_order_with_their_lines():
    message = parse_prototxt(TEXT, source="net.prototxt")
    assert message.string("name") == "FCN" and message.strings("input") == ["data"]
    assert message.ints("input_dim") == [1, 3, 500, 500]
    conv, crop, esc = message.messages("layer")
    assert (conv.line, crop.line) == (8, 16)
    assert [p.float("lr_mult") for p in conv.messages("param")] == [1.0, 2.0]  # `,` and < > forms
    params = conv.message("convolution_param")  # `name: { }`
    assert params.ints("kernel_size") == [3] and params.int("pad") == 100 and params.bool("bias_term") is False
    assert params.message("weight_filler").float("std") == 0.01
    assert conv.message("include").enum("phase", ("TRAIN", "TEST"), "TRAIN") == "TEST"
    assert crop.strings("bottom") == ["a", "b"] and crop.message("crop_param").int("offset") == 19
    assert esc.string("type") == 'Py"thon\nLayer'  # escapes, adjacent strings joined
    assert esc.message("python_param").string("param_str") == "{'a': 1}"
    floats = message.floats("values")
    assert floats[0] == 1.5 and floats[1] == -math.inf and math.isnan(floats[2]) and floats[3:] == [0.5, -3.0]
    assert isinstance(conv.message("include").get("phase"), Identifier)
    assert message.where("input_dim") == "net.prototxt:7"


def test_feature_absent_fields_take_defaults_and_empty_messages():
    message = parse_prototxt("layer { name: 'a' }")
    layer = message.message("layer")
    assert layer.message("pooling_param").enum("pool", ("MAX", "AVE"), "MAX") == "MAX"
    assert layer.int("group", 1) == 1 and layer.bool("bias_term", True) is True and layer.all("bottom") == []


def test_feature_the_authors_prototxts_parse():
    counts = {"voc-fcn8s/deploy.prototxt": 47, "voc-fcn8s/val.prototxt": 50, "voc-fcn32s/val.prototxt": 42,
              "crfasrnn/TVG_CRFRNN_new_deploy.prototxt": 50, "crfasrnn/TVG_CRFRNN_COCO_VOC.prototxt": 50}
    for name, count in counts.items():
        message = prototxt.read_prototxt(CAFFE_FOLDER / name)
        layers = message.messages("layer") or message.messages("layers")
        assert len(layers) == count, name
    v1 = prototxt.read_prototxt(CAFFE_FOLDER / "crfasrnn/TVG_CRFRNN_COCO_VOC.prototxt")
    assert v1.messages("layers")[-1].get("type") == "MULTI_STAGE_MEANFIELD"


def test_feature_format_round_trips():
    message = parse_prototxt(TEXT)
    again = parse_prototxt(format_prototxt(message))
    assert again.to_dict().keys() == message.to_dict().keys()
    assert format_prototxt(again) == format_prototxt(message)


@pytest.mark.parametrize("text, where, why", [
    ("layer {\n  name: 'a'\n", "1:7", r"'\{' opened here is never closed with '\}'"),
    ("layer { name 'a' }", "1:14", "expected ':' or '{' after field name 'name'"),
    ("name: 'abc", "1:7", "a string is not closed on its line"),
    ("layer { name: 'a' } }", "1:21", "expected a field name, got '}'"),
    ("a: @", "1:4", "unexpected character '@'"),
    ("a: [1, 2", "1:8", r"expected ',' or '\]' in the list of 'a'"),
    ("a:", "1:2", "expected a value for field 'a', got the end of the file"),
])
def test_exception_syntax_errors_name_the_line_and_column(text, where, why):
    with pytest.raises(ValueError, match=rf"prototxt syntax error at net.prototxt:{where}: ({why})"):
        parse_prototxt(text, source="net.prototxt")


def test_exception_typed_getters_name_the_field_and_line():
    message = parse_prototxt("a: 'x'\nb: 1.5\nc: 1\nc: 2\nd: MAYBE\ne: 3\n", source="n.prototxt")
    for call, why in ((lambda: message.int("a"), "n.prototxt:1: field 'a' must be an integer, got 'x'"),
                      (lambda: message.int("b"), "n.prototxt:2: field 'b' must be an integer, got 1.5"),
                      (lambda: message.get("c"), "n.prototxt:4: field 'c' is given 2 times"),
                      (lambda: message.bool("d"), "n.prototxt:5: field 'd' must be true or false, got 'MAYBE'"),
                      (lambda: message.enum("d", ("MAX", "AVE"), "MAX"), "n.prototxt:5: field 'd' must be one of"),
                      (lambda: message.message("e"), r"n.prototxt:6: field 'e' must be a message"),
                      (lambda: message.string("e"), "n.prototxt:6: field 'e' must be a quoted string"),
                      (lambda: message.int("e", minimum=4), "n.prototxt:6: field 'e' must be at least 4, got 3")):
        with pytest.raises(ValueError, match=why):
            call()


def test_exception_files_that_are_not_text(tmp_path):
    (tmp_path / "weights.caffemodel").write_bytes(b"\x0a\x03net\x00\x01")
    with pytest.raises(ValueError, match="is a binary file, not a text prototxt"):
        prototxt.read_prototxt(tmp_path / "weights.caffemodel")
    with pytest.raises(FileNotFoundError, match="must name an existing file"):
        prototxt.read_prototxt(tmp_path / "missing.prototxt")

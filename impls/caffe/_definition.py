"""A Caffe net definition (a .prototxt's NetParameter) as impls.caffe builds it: its inputs with
their shapes, and the layers that the phase, level and stages include, in order, with V1 files
(`layers` with enum types) read as V2 (`layer` with type names) the way Caffe upgrades them.
What cannot run is refused here, before anything is built: a layer type no one implements, a
layer that reads a dataset; layers that only training uses (losses, accuracy) are skipped in
TEST, each with a notice."""

from __future__ import annotations

import dataclasses
import logging
import os

from impls.port.caffe import V1_TYPE_NAMES
from impls.port.prototxt import Identifier, Message, parse_prototxt, read_prototxt

LOG = logging.getLogger("impls.caffe")
TRAIN, TEST = 0, 1  # caffe_pb2.Phase, as pycaffe's caffe.TRAIN and caffe.TEST
PHASES = ("TRAIN", "TEST")

# Layers that compute a loss or a score against labels: they take no part in inference.
TRAINING_ONLY = frozenset({"SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
                           "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "Accuracy"})
# Layers that read a dataset (and Python layers, user code): a deploy net has an Input instead.
DATA_LAYERS = frozenset({"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "DummyData", "Python",
                         "ImageSegData", "AnnotatedData"})


@dataclasses.dataclass(frozen=True)
class LayerDef:
    """One layer of the definition: `params` is its whole message (the layer's *_param fields)."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: Message

    @property
    def where(self) -> str:
        return self.params.where()


@dataclasses.dataclass(frozen=True)
class NetDef:
    name: str
    inputs: tuple  # ((blob name, shape tuple), ...)
    layers: tuple[LayerDef, ...]
    skipped: tuple  # ((layer, type, why), ...)
    source: str


def load_definition(prototxt, *, phase: int, level: int = 0, stages=(), known_types=frozenset()) -> NetDef:
    """The NetDef of a .prototxt path (or a Message) for `phase` (TRAIN 0 or TEST 1), `level` and
    `stages`; `known_types` are the layer types that can run."""
    if isinstance(prototxt, Message):
        message = prototxt
    elif isinstance(prototxt, str | os.PathLike):
        message = read_prototxt(prototxt)
    else:
        raise TypeError(f"Net: argument 'network_file' must be a .prototxt path, got {prototxt!r} of type "
                        f"{type(prototxt).__name__}")
    state = (phase, level, frozenset(stages))
    raw = _layers(message)
    inputs = list(_legacy_inputs(message))
    layers, skipped = [], []
    for layer in raw:
        if not _included(layer, state):
            continue
        definition = _layer_def(layer, len(layers))
        if definition.type == "Input":
            inputs += _input_layer(definition)
            continue
        why = _why_not(definition, phase, known_types)
        if why:
            skipped.append((definition.name, definition.type, why))
            LOG.warning("impls.caffe: skipped layer %r (%s) at %s: %s", definition.name, definition.type,
                        definition.where, why)
            continue
        layers.append(definition)
    names = [name for name, _ in inputs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{message.source}: input(s) {twice} are declared more than once")
    return NetDef(message.get("name", "") if isinstance(message.get("name", ""), str) else "", tuple(inputs),
                  tuple(layers), tuple(skipped), message.source)


def definition_from_text(text: str, **options) -> NetDef:
    return load_definition(parse_prototxt(text), **options)


def _layers(message):
    v2, v1 = message.messages("layer"), message.messages("layers")
    if v2 and v1:
        raise ValueError(f"{message.source}: the net mixes V2 `layer` and V1 `layers` definitions")
    if not v2 and not v1:
        raise ValueError(f"{message.source}: the net defines no layer (neither `layer {{ }}` nor `layers {{ }}`)")
    return v2 or v1


def _layer_def(layer: Message, index: int) -> LayerDef:
    type_ = layer.get("type", None)
    if type_ is None:
        raise ValueError(f"{layer.where()}: layer {layer.get('name', index)!r} has no type")
    if isinstance(type_, str) and not isinstance(type_, Identifier):  # V2: type: "Convolution"
        name_of_type = str(type_)
    elif isinstance(type_, Identifier) and str(type_) in V1_TYPE_NAMES:  # V1: type: CONVOLUTION
        name_of_type = V1_TYPE_NAMES[str(type_)]
    else:
        raise ValueError(f"{layer.where('type')}: layer {layer.get('name', index)!r} has type {type_!r}, which is "
                         f"neither a V2 type name nor one of Caffe's V1 layer types")
    name = layer.string("name", f"layer{index}") if "name" in layer else f"{name_of_type.lower()}{index}"
    return LayerDef(name, name_of_type, tuple(layer.strings("bottom")), tuple(layer.strings("top")), layer)


def _why_not(layer: LayerDef, phase: int, known_types) -> str:
    """Why a layer is skipped ("" if it runs); raises for a layer that cannot run at all."""
    if layer.type in TRAINING_ONLY and phase == TEST:
        return "a training-only layer (it scores against labels), not run in TEST"
    if layer.type in DATA_LAYERS:
        detail = ""
        if layer.type == "Python":
            python = layer.params.message("python_param")
            detail = f": {python.string('module', '?')}.{python.string('layer', '?')}"
        raise ValueError(f"{layer.where}: layer {layer.name!r} ({layer.type}{detail}) reads a dataset, which "
                         f"impls.caffe does not run: a deploy net takes its input from an Input layer; "
                         f"impls.caffe.deploy('{os.path.basename(layer.params.source)}') writes one, as the "
                         f"authors' voc-fcn8s/deploy.prototxt was made from their val.prototxt")
    if layer.type not in known_types:
        raise ValueError(f"{layer.where}: layer {layer.name!r} has type {layer.type!r}, which impls.caffe does "
                         f"not implement (it runs {', '.join(sorted(known_types))}); nothing was built")
    return ""


def _legacy_inputs(message: Message):
    """The net-level `input:` names with their `input_shape { dim }` or four `input_dim`s each."""
    names = message.strings("input")
    shapes = [tuple(shape.ints("dim", minimum=0)) for shape in message.messages("input_shape")]
    dims = message.ints("input_dim", minimum=0)
    if shapes and dims:
        raise ValueError(f"{message.where('input_dim')}: the net gives both input_shape and input_dim")
    if dims:
        if len(dims) != 4 * len(names):
            raise ValueError(f"{message.where('input_dim')}: {len(names)} input(s) need {4 * len(names)} input_dim "
                             f"values (four each), got {len(dims)}")
        shapes = [tuple(dims[4 * i:4 * i + 4]) for i in range(len(names))]
    if len(shapes) != len(names):
        raise ValueError(f"{message.where('input')}: {len(names)} input(s) but {len(shapes)} input shape(s)")
    return list(zip(names, shapes, strict=True))


def _input_layer(layer: LayerDef):
    shapes = [tuple(shape.ints("dim", minimum=0)) for shape in layer.params.message("input_param").messages("shape")]
    if len(shapes) == 1:
        shapes = shapes * len(layer.tops)
    if len(shapes) != len(layer.tops) or not layer.tops:
        raise ValueError(f"{layer.where}: Input layer {layer.name!r} has {len(layer.tops)} top(s) and "
                         f"{len(shapes)} shape(s): give one shape, or one per top")
    return list(zip(layer.tops, shapes, strict=True))


def _included(layer: Message, state) -> bool:
    """Caffe's Net::FilterNet: no rule includes; any `include` rule met includes; any `exclude`
    rule met excludes (a layer has one kind of rule or the other)."""
    include, exclude = layer.messages("include"), layer.messages("exclude")
    if include and exclude:
        raise ValueError(f"{layer.where()}: layer {layer.get('name', '?')!r} has both include and exclude rules")
    if include:
        return any(_meets(rule, state) for rule in include)
    return not any(_meets(rule, state) for rule in exclude)


def _meets(rule: Message, state) -> bool:
    phase, level, stages = state
    if "phase" in rule and PHASES.index(rule.enum("phase", PHASES, "TRAIN")) != phase:
        return False
    if "min_level" in rule and level < rule.int("min_level"):
        return False
    if "max_level" in rule and level > rule.int("max_level"):
        return False
    return (all(stage in stages for stage in rule.strings("stage"))
            and not any(stage in stages for stage in rule.strings("not_stage")))

"""What every loader of a user's weight file shares (Keras 2 .h5, Caffe .caffemodel): the report
form, the argument checks and the one strictness rule.

A loader reads the file into {file layer: {weight: array}} (arrays may be lazy: h5py datasets,
memory-mapped blobs; only `.shape` is read before the plan is made) and describes the model it
loads into as a target (below); `load` matches the two by layer name, plans every copy, refuses
before copying anything when strict, and reports every weight.

A target has `layers` ({name: layer}) and, for one layer, `kind(layer)`, `weight_names(layer)`
(what it expects, in the file's naming), `difference(layer, weights)` (why the file's
{weight: array} cannot load into it, or "": names, shapes, and for weights the layer holds fixed,
values) and `load(layer, weights)` (copies them, returns [(weight, shape in the target)]).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable, Mapping


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What a loader (`load_keras2_h5`, `load_caffemodel`) did with a file, every weight accounted
    for.

    loaded: [(file layer, target layer, kind, [(weight, shape in the target)])];
    missing: [(target layer, [weight])] of the target's layers the file has no layer for: left
        at their values (their initial values in a new model);
    unused: [(file layer, [weight])] of the file's layers with weights that no target layer is
        named after;
    mismatched: [(layer, why)] of the layers whose weights differ in names, shapes or (for a
        weight the model holds fixed) values; `why` names both shapes: not loaded, the target's
        left as they were;
    excluded: the layers skipped on request (`exclude`), neither loaded nor reported above.
    """

    path: str
    loaded: tuple
    missing: tuple
    unused: tuple
    mismatched: tuple
    excluded: tuple

    @property
    def moved(self):
        """[(target layer/weight, target shape)] of every weight loaded."""
        return tuple((f"{target}/{weight}", shape)
                     for _, target, _, weights in self.loaded for weight, shape in weights)

    @property
    def complete(self):
        """Whether every weight of the file was loaded and every weight of the target was set
        (excluded layers aside)."""
        return not (self.missing or self.unused or self.mismatched)

    @property
    def problems(self) -> list[str]:
        """One line per layer that was not loaded (missing, unused, mismatched), empty when complete."""
        return ([f"missing from the file (left at its initial values): {name} [{', '.join(weights)}]"
                 for name, weights in self.missing]
                + [f"unused (no layer of that name in the model): {name} [{', '.join(weights)}]"
                   for name, weights in self.unused]
                + [f"mismatched: {name}: {why}" for name, why in self.mismatched])

    def summary(self) -> str:
        """One line: counts of what was loaded and of what was not."""
        count = sum(len(weights) for _, _, _, weights in self.loaded)
        return (f"{self.path}: {count} weight(s) of {len(self.loaded)} layer(s) loaded; {len(self.missing)} "
                f"missing, {len(self.unused)} unused, {len(self.mismatched)} mismatched, {len(self.excluded)} "
                f"excluded")

    def __str__(self):
        lines = [self.summary()]
        for source, target, kind, weights in self.loaded:
            renamed = f" <- {source}" if source != target else ""
            lines.append(f"  {target}{renamed} ({kind}): " + ", ".join(f"{w} {shape}" for w, shape in weights))
        lines += [f"  {line}" for line in self.problems]
        if self.excluded:
            lines.append(f"  excluded: {', '.join(self.excluded)}")
        return "\n".join(lines)


def load(file_layers: Mapping, target, *, path: str, op: str, strict: bool, exclude: frozenset,
         rename: dict, merge: bool = False) -> LoadReport:
    """Loads {file layer: {weight: array}} into `target` by layer name (after `rename`), skipping
    `exclude`, and reports every weight. With `merge`, several file layers may load into one
    target layer when they supply different weights (Caffe's BatchNorm and the Scale after it
    into one BatchNorm layer); otherwise one file layer loads into one target layer.

    Strict: anything but a complete match raises a ValueError naming every layer, before anything
    is copied. Not strict: what matches loads and the report lists the rest. A file that shares
    no layer with the target raises either way."""
    check_names(rename, exclude, file_layers, target, op=op)
    groups, unused, excluded = {}, [], []
    for name, weights in file_layers.items():
        target_name = rename.get(name, name)
        if name in exclude or target_name in exclude:
            excluded.append(name)
        elif target_name not in target.layers:
            unused.append((name, tuple(weights)))
        else:
            groups.setdefault(target_name, []).append((name, weights))
    plan, mismatched = [], []
    for target_name, members in groups.items():
        layer = target.layers[target_name]
        why = _group_difference(members, merge) or target.difference(layer, _union(members))
        if why:
            label = "+".join(name for name, _ in members)
            renamed = any(name in rename for name, _ in members)
            mismatched.append((label, why + (f" (target layer {target_name!r})" if renamed else "")))
        else:
            plan += [(name, target_name, layer, weights) for name, weights in members]
    matched = {rename.get(name, name) for name in file_layers}
    missing = tuple((name, target.weight_names(layer)) for name, layer in target.layers.items()
                    if name not in matched and name not in exclude)
    if file_layers and len(unused) == len(file_layers):
        raise ValueError(f"{op}: {path} shares no layer name with the target: the file has "
                         f"{list(file_layers)}, the target {list(target.layers)}; nothing was loaded")
    report = LoadReport(path, (), missing, tuple(unused), tuple(mismatched), tuple(excluded))
    if strict and not report.complete:
        raise ValueError(f"{op}: {path} does not match the model (strict=True); nothing was loaded:\n  "
                         + "\n  ".join(report.problems)
                         + "\n(exclude=[...] skips layers on purpose; strict=False loads what matches and "
                           "returns this report)")
    loaded = tuple((name, target_name, target.kind(layer), target.load(layer, weights))
                   for name, target_name, layer, weights in plan)
    return dataclasses.replace(report, loaded=loaded)


def _group_difference(members, merge):
    """Why file layers cannot load together into one target layer, or ""."""
    if len(members) == 1:
        return ""
    names = [name for name, _ in members]
    if not merge:
        return f"file layers {names} would all load into it"
    seen = {}
    for name, weights in members:
        for weight in weights:
            if weight in seen:
                return f"file layers {seen[weight]!r} and {name!r} both supply its weight {weight!r}"
            seen[weight] = name
    return ""


def _union(members):
    return {weight: value for _, weights in members for weight, value in weights.items()}


def shapes(weights: Mapping) -> dict:
    """{weight: shape} of {weight: array-like}."""
    return {weight: tuple(value.shape) for weight, value in weights.items()}


def weight_difference(found: Mapping, expected: Mapping) -> str:
    """Why a file layer's {weight: shape} cannot load into a target layer's {weight: shape}, or ""."""
    if set(found) != set(expected):
        return f"the file has weights {sorted(found)}, the target {sorted(expected)}"
    wrong = [f"{weight} {found[weight]} in the file vs {expected[weight]} in the target" for weight in found
             if found[weight] != expected[weight]]
    return ", ".join(wrong)


def target_of(model, torch_target, keras_target, *, op: str):
    """The target of a load into `model`: torch_target(model) for a torch module, keras_target(model)
    for a Keras layer or model. A model of either kind means its framework is imported already: the
    other one is never imported (TF takes seconds)."""
    torch, keras = sys.modules.get("torch"), sys.modules.get("keras")
    if torch is not None and isinstance(model, torch.nn.Module):
        return torch_target(model)
    if keras is not None and isinstance(model, keras.layers.Layer):
        return keras_target(model)
    raise TypeError(f"{op}: argument 'model' must be a torch.nn.Module or a Keras layer or model "
                    f"(keras.layers.Layer), got {type(model).__name__}")


def check_path(path, *, op: str) -> str:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{op}: argument 'path' must be a path (str or os.PathLike), got {path!r} of type "
                        f"{type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{op}: argument 'path' must name an existing file, got {path!r}")
    return path


def check_strict(strict, *, op: str) -> bool:
    if not isinstance(strict, bool):
        raise TypeError(f"{op}: argument 'strict' must be a bool, got {strict!r} of type {type(strict).__name__}")
    return strict


def check_exclude(exclude, *, op: str) -> frozenset:
    if isinstance(exclude, str | bytes) or not isinstance(exclude, Iterable):
        raise TypeError(f"{op}: argument 'exclude' must be a list of layer names, got {exclude!r}")
    names = tuple(exclude)
    wrong = [name for name in names if not isinstance(name, str)]
    if wrong:
        raise TypeError(f"{op}: argument 'exclude' must hold layer names (str), got {wrong[0]!r}")
    return frozenset(names)


def check_rename(rename, *, op: str, one_to_one: bool = True) -> dict:
    """`rename` as a dict of file layer names to target layer names; with `one_to_one`, no two
    file layers may be renamed onto one target layer."""
    if rename is None:
        return {}
    if not isinstance(rename, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in rename.items()):
        raise TypeError(f"{op}: argument 'rename' must be a mapping of file layer names to target layer names "
                        f"(str to str), got {rename!r}")
    targets = list(rename.values())
    twice = sorted({name for name in targets if targets.count(name) > 1})
    if one_to_one and twice:
        raise ValueError(f"{op}: argument 'rename' must map one file layer to each target layer, got several "
                         f"onto {twice}")
    return dict(rename)


def check_names(rename, exclude, file_layers, target, *, op: str) -> None:
    unknown = sorted(set(rename) - set(file_layers))
    if unknown:
        raise ValueError(f"{op}: argument 'rename' must map layers of the file, got {unknown}, which the file "
                         f"has no weights for (its layers: {list(file_layers)})")
    known = set(file_layers) | set(target.layers) | set(rename.values())
    unknown = sorted(exclude - known)
    if unknown:
        raise ValueError(f"{op}: argument 'exclude' must name layers of the file or the model, got {unknown}, "
                         f"which neither has")

"""The backends must not drift apart: same public names, same signatures, one docstring."""

import importlib
import inspect

import pytest

from impls import BACKENDS


def _backends():
    modules = {}
    for name in BACKENDS:
        try:
            modules[name] = importlib.import_module(f"impls.{name}")
        except ImportError as error:
            pytest.skip(f"backend {name} does not import: {error}")
    return modules


def _signature(obj):
    return inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)


def test_backends_export_the_same_public_names():
    modules = _backends()
    numpy_names = set(modules["numpy"].__all__)
    for name, module in modules.items():
        layers = set(getattr(module, "LAYERS", ()))
        assert set(module.__all__) - layers == numpy_names, f"impls.{name}.__all__ differs from impls.numpy's"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"impls.{name} lists {missing} in __all__ but does not define them"


def test_backends_share_signatures():
    modules = _backends()
    for public in modules["numpy"].__all__:
        expected = _signature(getattr(modules["numpy"], public))
        for name, module in modules.items():
            got = _signature(getattr(module, public))
            assert got == expected, f"impls.{name}.{public}{got} differs from impls.numpy.{public}{expected}"


def test_backends_share_the_numpy_docstring():
    modules = _backends()
    for public in modules["numpy"].__all__:
        doc = getattr(modules["numpy"], public).__doc__
        assert doc and len(doc) > 80, f"impls.numpy.{public} needs a real docstring"
        for name, module in modules.items():
            assert getattr(module, public).__doc__ == doc, f"impls.{name}.{public} has its own docstring"


def test_framework_layers_share_names_signatures_and_docstrings():
    modules = {name: module for name, module in _backends().items() if name != "numpy"}
    torch_layers = modules["torch"].LAYERS
    assert modules["tf"].LAYERS == torch_layers
    for public in torch_layers:
        expected = getattr(modules["torch"], public)
        got = getattr(modules["tf"], public)
        assert _signature(got) == _signature(expected), f"impls.tf.{public} and impls.torch.{public} signatures differ"
        assert got.__doc__ == expected.__doc__ and len(expected.__doc__) > 80, f"{public}: one shared docstring"

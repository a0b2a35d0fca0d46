"""Docstrings are written once, on the NumPy oracle's public name (or, for the torch and TF
layers NumPy has no counterpart of, on a *Doc class: impls._models, impls._crfrnn); the other
backends borrow them."""


def same_doc_as(documented):
    """Decorator: the decorated function or class takes `documented`'s docstring."""

    def attach(obj):
        obj.__doc__ = documented.__doc__
        return obj

    return attach

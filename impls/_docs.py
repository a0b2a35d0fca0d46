"""Docstrings are written once, on the NumPy reference; the other backends borrow them."""


def same_doc_as(reference):
    def attach(obj):
        obj.__doc__ = reference.__doc__
        return obj

    return attach

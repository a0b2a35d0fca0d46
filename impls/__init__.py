"""Segmentation parity and dense-CRF benchmark harness.

Backends share public names: `impls.numpy` (reference, (N, H, W, C)), `impls.torch`
((N, C, H, W)) and `impls.tf` ((N, H, W, C)). Import the backend you need; importing
`impls` alone loads no framework.
"""

BACKENDS = ("numpy", "torch", "tf")

__version__ = "0.1.0"

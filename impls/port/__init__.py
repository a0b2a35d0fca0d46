"""Weights between frameworks and from users' files, one module per kind of file over one report
form and one strictness rule:

- `torch_to_tf`, `tf_to_torch` (impls.port.frameworks): a torch module's weights into the Keras
  model with the same layer names, or back, with each kind's layout rule; `layer_differences`,
  `first_difference` (impls.port.compare): where the two frameworks' outputs part ways;
- `load_keras2_h5`, `read_keras2_h5` (impls.port.keras2): legacy Keras 2 HDF5 weight files;
- `load_caffemodel`, `read_caffemodel`, `read_prototxt` (impls.port.caffe, impls.port.prototxt):
  Caffe's binary weight files and text net definitions, read without Caffe.

Every loader reports loaded / missing / unused / mismatched / excluded weights (`LoadReport`), is
strict by default (anything but a complete match raises, naming each layer, before anything is
copied) and takes `exclude=` and `rename=`.
"""

from impls.port._loading import LoadReport
from impls.port.caffe import load_caffemodel, read_caffemodel
from impls.port.compare import first_difference, layer_differences
from impls.port.frameworks import PortReport, tf_to_torch, torch_to_tf
from impls.port.keras2 import Keras2Report, load_keras2_h5, read_keras2_h5
from impls.port.prototxt import read_prototxt

__all__ = ["PortReport", "torch_to_tf", "tf_to_torch", "layer_differences", "first_difference", "LoadReport",
           "Keras2Report", "load_keras2_h5", "read_keras2_h5", "load_caffemodel", "read_caffemodel", "read_prototxt"]

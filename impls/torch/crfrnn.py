"""CRF-as-RNN as a torch nn.Module, layout (N, C, H, W); see impls._crfrnn.CrfRnnDoc."""

from __future__ import annotations

import torch

from impls import _checks, _crfrnn, native
from impls._docs import same_doc_as
from impls.torch.crf import ops_for

__all__ = ["CrfRnn"]


def mean_field(config, logits, image, weights, *, initial=None):
    """CRF-as-RNN's steps with fixed widths on a batch: logits (N, C, H, W), image (N, 3, H, W)
    (any values: the bilateral kernel's features are image / theta_beta), weights the (spatial,
    bilateral, compatibility) (C, C) matrices, `initial` the logits of the first step's softmax
    (default: `logits`); config as CrfRnn's (impls._crfrnn.check_config). Caffe's
    MultiStageMeanfield layer (impls.caffe) runs this."""
    kernels = _crfrnn.kernel_parameters(config)
    ops = CrfRnn._ops(logits)
    _, classes, height, width = logits.shape
    refined = []
    for n in range(logits.shape[0]):
        start = None if initial is None else initial[n].permute(1, 2, 0).reshape(-1, classes)
        q = _crfrnn.refine(ops, logits[n].permute(1, 2, 0).reshape(-1, classes), image[n], kernels, weights,
                           initial=start)
        refined.append(q.reshape(height, width, classes).permute(2, 0, 1))
    return torch.stack(refined)


@same_doc_as(_crfrnn.CrfRnnDoc)
class CrfRnn(torch.nn.Module):
    def __init__(self, num_classes, theta_alpha=160, theta_beta=3, theta_gamma=3, iterations=5,
                 trainable_widths=False, **kwargs):
        super().__init__()
        self.name = _checks.torch_layer_name(kwargs, op="CrfRnn")
        self.config = {**_crfrnn.check_config(num_classes, theta_alpha, theta_beta, theta_gamma, iterations),
                       "trainable_widths": _crfrnn.check_trainable_widths(trainable_widths)}
        self._kernels = _crfrnn.kernel_parameters(self.config)
        eye = torch.eye(self.config["num_classes"])
        self.spatial_ker_weights = torch.nn.Parameter(_crfrnn.SPATIAL_WEIGHT * eye)
        self.bilateral_ker_weights = torch.nn.Parameter(_crfrnn.BILATERAL_WEIGHT * eye)
        self.compatibility_matrix = torch.nn.Parameter(-eye)
        if self.config["trainable_widths"]:
            for name, value in zip(_crfrnn.WIDTH_NAMES, _crfrnn.initial_log_widths(self.config), strict=True):
                setattr(self, name, torch.nn.Parameter(torch.tensor(value, dtype=eye.dtype)))

    @property
    def thetas(self):
        log_widths = self._log_widths()
        return _crfrnn.thetas_in_use(self.config, None if log_widths is None else
                                     [w.item() for w in log_widths])

    def _log_widths(self):
        return [getattr(self, name) for name in _crfrnn.WIDTH_NAMES] if self.config["trainable_widths"] else None

    def extra_repr(self):
        return ", ".join(f"{key}={value}" for key, value in self.config.items())

    def forward(self, logits, image):
        self._check(logits, image)
        return torch.stack([self._one_image(logits[n], image[n]) for n in range(logits.shape[0])])

    def _one_image(self, logits, image):
        classes, height, width = logits.shape
        weights = [w.to(logits.dtype) for w in (self.spatial_ker_weights, self.bilateral_ker_weights,
                                                self.compatibility_matrix)]
        q = _crfrnn.refine(self._ops(logits), logits.permute(1, 2, 0).reshape(-1, classes), image, self._kernels,
                           weights, self._log_widths())
        return q.reshape(height, width, classes).permute(2, 0, 1)

    @staticmethod
    def _ops(logits):
        on_device = logits.device.type == "cpu" or (logits.device.type == "cuda" and native.has_cuda())
        return ops_for("native" if native.available() and on_device else "framework")

    def _check(self, logits, image):
        for name, tensor in (("logits", logits), ("image", image)):
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"CrfRnn: argument '{name}' must be a torch.Tensor, got {type(tensor).__name__}")
        _crfrnn.check_inputs(tuple(logits.shape), str(logits.dtype).removeprefix("torch."), tuple(image.shape),
                             self.config["num_classes"], layout="NCHW")
        if image.device != logits.device:
            raise ValueError(f"CrfRnn: argument 'image' must be on the logits' device {logits.device}, "
                             f"got {image.device}")
        if not torch.isfinite(logits).all():
            raise ValueError("CrfRnn: argument 'logits' must be finite (no NaN or inf)")

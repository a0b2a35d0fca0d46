"""Every torch entry point keeps its tensors on the input's device: run with the default
device set to "meta" while the inputs are CPU tensors, any tensor created without the
input's device lands on meta and the call fails. Passing here is what keeps the torch code
on the GPU when the inputs are there (no GPU is needed to prove it)."""

import contextlib

import numpy as np
import pytest

from tests.inputs import crf_image, smooth_unary

torch = pytest.importorskip("torch")
import impls.torch  # noqa: E402


@contextlib.contextmanager
def default_device_meta():
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def _image_and_unary(height=12, width=16, labels=3):
    image = torch.from_numpy(crf_image("im1")[:height, :width].copy()).permute(2, 0, 1)[None]
    unary = torch.from_numpy(smooth_unary(height, width, labels, seed=1)).permute(2, 0, 1)[None]
    return image, unary


def _dense_crf(engine):
    image, unary = _image_and_unary()
    return lambda: impls.torch.dense_crf(unary, image, iterations=2, engine=engine)


def _permutohedral_filter():
    generator = torch.Generator().manual_seed(0)
    values, features = torch.rand(50, 3, generator=generator), torch.rand(50, 2, generator=generator) * 3
    return lambda: impls.torch.permutohedral_filter(values, features)


def _crf_rnn_forward_backward():
    image, unary = _image_and_unary()
    layer = impls.torch.CrfRnn(3, iterations=2)
    logits = unary.clone().requires_grad_(True)

    def run():
        out = layer(logits, image.float())
        out.sum().backward()
        return out
    return run


def _dense_crf_width_gradients(engine):
    image, unary = _image_and_unary()
    widths = {"gaussian_sxy": torch.tensor(3.0, requires_grad=True),
              "bilateral_sxy": torch.tensor([8.0, 9.0], requires_grad=True),
              "bilateral_srgb": torch.tensor(13.0, requires_grad=True)}

    def run():
        out = impls.torch.dense_crf(unary, image, iterations=2, engine=engine, **widths)
        out.square().sum().backward()
        return [out, *(width.grad for width in widths.values())]
    return run


def _fcn():
    model = impls.torch.FCN("8s", num_classes=3).eval()
    images = torch.rand(1, 3, 64, 64)
    return lambda: model(images)


def _deeplab():
    model = impls.torch.DeepLabV2(num_classes=3, scales=(1.0, 0.5)).eval()
    images = torch.rand(1, 3, 41, 41)
    return lambda: model(images)


def _metrics():
    pred = torch.from_numpy(np.array([[0, 1, 2, 2]]))
    label = torch.from_numpy(np.array([[0, 1, 1, 255]]))

    def run():
        confusion = impls.torch.confusion_matrix(pred, label, 3)
        empty = impls.torch.confusion_matrix(pred[:, :0], label[:, :0], 3)
        return [impls.torch.mean_iou(confusion), impls.torch.pixel_accuracy(confusion),
                impls.torch.frequency_weighted_iou(confusion), impls.torch.per_class_iou(confusion),
                impls.torch.frequency_weighted_iou(empty), impls.torch.mean_iou(empty)]
    return run


def _segmentation_loss():
    logits = torch.rand(2, 3, 5, 5, requires_grad=True)
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 3, (2, 5, 5)))
    labels[0, 0, 0] = 255

    def run():
        loss = impls.torch.segmentation_loss(logits, labels)
        loss.backward()
        return loss
    return run


def _boxes():
    generator = torch.Generator().manual_seed(0)
    boxes = torch.rand(6, 2, generator=generator).repeat(1, 2) + torch.tensor([0.0, 0.0, 0.3, 0.4])
    scores = torch.rand(6, generator=generator)

    def run():
        deltas = impls.torch.box_refinement(boxes, boxes.flip(0))
        return [impls.torch.norm_boxes(boxes, (5, 5)), impls.torch.denorm_boxes(boxes, (5, 5)), deltas,
                impls.torch.apply_box_deltas(boxes, deltas), impls.torch.clip_boxes(boxes, (0, 0, 1, 1)),
                impls.torch.box_iou(boxes, boxes), impls.torch.nms(boxes, scores, 0.3, 4, 0.1)]
    return run


def _roi_and_masks():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 9, 9, generator=generator)
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.3, 0.3, 0.6, 0.5]])
    indices = torch.tensor([1, 0])
    maps = [torch.rand(2, 3, size, size, generator=generator) for size in (16, 8, 4, 2)]
    rgb = (torch.rand(3, 9, 9, generator=generator) * 255).to(torch.uint8)
    rois = torch.tensor([[1.0, 0.5, 1.0, 6.0, 7.5]])

    def run():
        return [impls.torch.crop_and_resize(image, boxes, indices, (3, 4)),
                impls.torch.crop_and_resize(image, boxes, indices, 2, method="nearest"),
                impls.torch.roi_align(image, rois, 2, 1.0, -1, True),
                impls.torch.pyramid_roi_align(boxes[None].repeat(2, 1, 1), maps, (64, 64), 2),
                impls.torch.unmold_mask(image[0, 0], (1, 2, 6, 8), (9, 9)),
                impls.torch.color_splash(rgb, image[:, 0] > 0.5)]
    return run


def _caffe_net():
    """impls.caffe.Net through layers whose torch code makes tensors of its own (pooling with the
    input padded by hand and its divisor, BatchNorm's factor, ArgMax's ranking, MultiStageMeanfield)."""
    from impls import caffe
    from impls.port.prototxt import parse_prototxt

    text = """input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 10
    layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
    layer { name: "pool" type: "Pooling" bottom: "bn" top: "pool" pooling_param { pool: AVE kernel_size: 3 stride: 3
            pad: 2 } }
    layer { name: "argmax" type: "ArgMax" bottom: "pool" top: "argmax" argmax_param { top_k: 2 out_max_val: true } }
    layer { name: "split" type: "Split" bottom: "data" top: "u" top: "q" }
    layer { name: "crf" type: "MultiStageMeanfield" bottom: "u" bottom: "q" bottom: "data" top: "crf"
            multi_stage_meanfield_param { num_iterations: 2 theta_alpha: 5 theta_beta: 3 theta_gamma: 3 } }
    """
    net = caffe.Net(parse_prototxt(text), caffe.TEST)
    net.params["bn"][2].data[...] = 1.0
    data = np.random.default_rng(0).standard_normal((1, 3, 8, 10)).astype(np.float32)

    def run():
        out = net.forward(data=data)
        return [torch.from_numpy(value) for value in out.values()]
    return run


ENTRY_POINTS = {
    "caffe-Net-forward": _caffe_net,
    "dense_crf-framework": lambda: _dense_crf("framework"),
    "dense_crf-native": lambda: _dense_crf("native"),
    "dense_crf-width-gradients-framework": lambda: _dense_crf_width_gradients("framework"),
    "dense_crf-width-gradients-native": lambda: _dense_crf_width_gradients("native"),
    "permutohedral_filter": _permutohedral_filter,
    "CrfRnn-forward-backward": _crf_rnn_forward_backward,
    "FCN-8s-forward": _fcn,
    "DeepLabV2-forward": _deeplab,
    "metrics": _metrics,
    "segmentation_loss": _segmentation_loss,
    "boxes": _boxes,
    "roi-and-masks": _roi_and_masks,
}


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_feature_entry_point_creates_every_tensor_on_the_input_device(entry_point):
    run = ENTRY_POINTS[entry_point]()  # models and inputs are built on the CPU
    with default_device_meta():
        out = run()
    outputs = out if isinstance(out, list) else [out]
    assert all(o.device.type == "cpu" for o in outputs), [o.device for o in outputs]

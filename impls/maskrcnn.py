"""matterport's Mask R-CNN, framework-neutral: the configuration and the image molding around
the network. The networks are `impls.torch.MaskRCNN` and `impls.tf.MaskRCNN` (matterport's
layer names, so that its .h5 files load with `impls.port.load_keras2_h5`); both take a
`Config` and `detect(images)` returns matterport's list of dicts.

    from impls.maskrcnn import Config
    class BalloonConfig(Config):        # or Config(NUM_CLASSES=2, ...)
        NAME = "balloon"
        NUM_CLASSES = 1 + 1

`Config` has matterport's field names and defaults (mrcnn/config.py) and computes BATCH_SIZE,
IMAGE_SHAPE and IMAGE_META_SIZE as its __init__ does; `resize_image`, `mold_inputs` and
`unmold_detections` are its utils' and model's NumPy steps around the network, written from
their behaviour (detect() runs them).
"""

from impls._maskrcnn import Config, mold_inputs, resize_image, unmold_detections

__all__ = ["Config", "resize_image", "mold_inputs", "unmold_detections"]

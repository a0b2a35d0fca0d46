"""The colour splash example: its PNG, and instances kept in colour and the rest grey."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from impls.examples import color_splash


def test_smoke_color_splash_example_writes_its_png(tmp_path, capsys):
    assert color_splash.main(["--output", str(tmp_path / "splash.png"), "--size", "60", "80"]) == 0
    panel = np.asarray(Image.open(tmp_path / "splash.png"))
    assert panel.shape == (60, 3 * 80 + 8, 3)
    assert "instances; wrote" in capsys.readouterr().out


def test_feature_splash_keeps_instance_colours_and_greys_the_rest(backend):
    if backend.device != "cpu":
        pytest.skip("the example runs on the CPU")
    result = color_splash.render(60, 80, seed=3, backend=backend.name)
    assert result.masks.shape[-1] == result.instances.max() >= 2
    inside = result.masks.any(axis=-1)
    np.testing.assert_array_equal(result.splash[inside], result.image[inside])
    outside = result.splash[~inside]
    assert (outside[:, 0] == outside[:, 1]).all() and (outside[:, 1] == outside[:, 2]).all(), "grey"
    # The unmolded 28 x 28 masks cover their instances up to a pixel at the border.
    overlap = (inside == (result.instances > 0)).mean()
    assert overlap > 0.97, overlap
    if backend.name != "numpy":
        np.testing.assert_array_equal(result.splash, color_splash.render(60, 80, seed=3).splash)


def test_feature_readme_figure_is_the_examples_current_output(tmp_path):
    """impls/examples/splash.png (shown in the README) is what the example renders today."""
    color_splash.main(["--output", str(tmp_path / "splash.png")])
    committed = pathlib.Path(color_splash.__file__).with_name("splash.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "splash.png")), np.asarray(Image.open(committed)),
                                  err_msg="regenerate: python -m impls.examples.color_splash --output "
                                          "impls/examples/splash.png")

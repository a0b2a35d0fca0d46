"""The golden files of reference/: the manifest agrees with them, regenerating changes no checksum,
a changed golden shows up, and the live implementations still reproduce them (tolerance table,
not bytes)."""

import pathlib
import shutil

import numpy as np
import pytest

from impls.testing import assert_close
from reference import generate
from tests.inputs import CRF_EXAMPLES, crf_example, example_recipe

ROOT = pathlib.Path(__file__).parent.parent
REGENERATE = "python3 reference/generate.py   (or: tox -e reference)"


def _golden(name):
    with np.load(generate.FOLDER / name, allow_pickle=False) as data:
        return {key: data[key] for key in data}


def test_feature_manifest_matches_the_stored_files():
    problems = generate.verify(generate.FOLDER, generate.load_manifest())
    assert not problems, "\n".join(problems) + f"\nregenerate with: {REGENERATE}"


def _need_every_producer():
    pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf produces one of the goldens")
    pytest.importorskip("torch", reason="torch produces the seeded model goldens")
    pytest.importorskip("tensorflow", reason="TF produces the seeded model goldens")


def test_feature_regenerating_changes_no_checksum(tmp_path):
    """Exact goldens keep their checksum on any machine; the float outputs of convolutions
    (marked inexact) keep it on the machine that made them and stay within tolerance elsewhere."""
    _need_every_producer()
    manifest = generate.load_manifest()
    fresh = generate.generate(tmp_path, log=lambda _: None)
    exact = {name for name, entry in manifest["files"].items() if entry["exact"]}
    changed = [name for name in exact if fresh["files"][name]["sha256"] != manifest["files"][name]["sha256"]]
    assert not changed, generate.manifest_diff(manifest, fresh)
    problems = generate.content_differences(generate.FOLDER, tmp_path, manifest)
    assert not problems, "\n".join(problems) + f"\nregenerate with: {REGENERATE}"


@pytest.mark.slow
def test_feature_inexact_goldens_regenerate_bit_identically_on_one_machine(tmp_path):
    _need_every_producer()
    only = [name for name, entry in generate.load_manifest()["files"].items() if not entry["exact"]]
    first = generate.generate(tmp_path / "first", log=lambda _: None, only=only)
    second = generate.generate(tmp_path / "second", log=lambda _: None, only=only)
    assert not generate.manifest_diff(first, second)


def test_feature_seeded_model_goldens_agree_across_frameworks():
    golden = _golden("seeded_models.npz")
    for name in ("fcn32s", "fcn16s", "fcn8s", "aspp", "deeplabv2", "deeplabv2_drsleep", "crfrnn", "largefov"):
        torch_out, tf_out = golden[f"{name}_torch"], golden[f"{name}_tf"]
        relative = np.abs(torch_out - tf_out).max() / np.abs(tf_out).max()
        assert relative <= 1e-4, f"{name}: torch and TF goldens differ by {relative:.2e} (relative max)"


def test_exception_inexact_golden_beyond_tolerance_is_reported(tmp_path):
    golden = _golden("seeded_models.npz")
    golden["aspp_tf"] = golden["aspp_tf"] + 1e-2
    generate.save_npz(tmp_path / "seeded_models.npz", golden)
    problems = generate.content_differences(generate.FOLDER, tmp_path, generate.load_manifest())
    assert problems == [f"seeded_models.npz:aspp_tf: max |difference| 0.01 beyond {generate.INEXACT_TOLERANCE}"]


def test_feature_a_changed_golden_shows_up_as_a_manifest_diff(tmp_path):
    for path in generate.FOLDER.glob("*.npz"):
        shutil.copy(path, tmp_path)
    manifest = generate.load_manifest()
    scenes = _golden("synthetic_scenes.npz")
    scenes["labels"][0, 0, 0] += 1
    generate.save_npz(tmp_path / "synthetic_scenes.npz", scenes)
    problems = generate.verify(tmp_path, manifest)
    assert len(problems) == 1 and problems[0].startswith("synthetic_scenes.npz: sha256 is "), problems
    changed = {**manifest, "files": {**manifest["files"],
                                     "synthetic_scenes.npz": generate.describe(tmp_path / "synthetic_scenes.npz")}}
    diff = generate.manifest_diff(manifest, changed)
    assert diff.count('\n-    "sha256"') == 1 and diff.count('\n+    "sha256"') == 1, diff


def test_exception_unlisted_and_missing_files(tmp_path):
    shutil.copy(generate.FOLDER / "synthetic_scenes.npz", tmp_path / "stray.npz")
    problems = generate.verify(tmp_path, generate.load_manifest())
    assert "stray.npz: present but not in the manifest" in problems
    assert "synthetic_scenes.npz: listed in the manifest but missing" in problems


def test_feature_saving_is_byte_reproducible(tmp_path):
    arrays = {"b": np.arange(6.0).reshape(2, 3), "a": np.ones(3, np.uint8)}
    generate.save_npz(tmp_path / "one.npz", arrays)
    generate.save_npz(tmp_path / "two.npz", dict(reversed(arrays.items())))
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    assert generate.describe(tmp_path / "one.npz")["arrays"] == {"a": {"shape": [3], "dtype": "uint8"},
                                                                 "b": {"shape": [2, 3], "dtype": "float64"}}


def test_feature_synthetic_scenes_golden_matches_the_generator():
    from impls.synthetic import GATE_SET, synthetic_set

    golden, scenes = _golden("synthetic_scenes.npz"), synthetic_set(**GATE_SET)
    assert_close(np.stack([s[0] for s in scenes]), golden["images"], msg="images")
    assert_close(np.stack([s[1] for s in scenes]), golden["labels"], msg="labels")
    assert_close(np.stack([s[2] for s in scenes[:2]]), golden["unaries"], msg="unaries")


@pytest.mark.parametrize("name", CRF_EXAMPLES)
def test_feature_example_recipe_matches_the_pydensecrf_golden(name):
    import impls.densecrf
    import impls.densecrf.utils

    golden = _golden("pydensecrf_examples.npz")
    image, annotation, _ = crf_example(name)
    _, divergences, labels = example_recipe(impls.densecrf, impls.densecrf.utils, image, annotation)
    agreement = np.mean(labels == golden[f"{name}_labels"])
    assert agreement >= 0.999, f"{name}: {agreement:.4%} of labels agree with pydensecrf's golden"
    # pydensecrf sums the pairwise part of its KL in float32: ~2e-5 relative.
    assert_close(np.array(divergences), golden[f"{name}_kl"], rtol=1e-4, msg=f"{name} KL")


@pytest.mark.parametrize("engine", ["framework", "native"])
def test_feature_dense_crf_matches_the_pydensecrf_golden(backend, engine):
    from impls import native

    if engine == "native" and not native.available():
        pytest.skip("impls._native is not built")
    image, unary = generate.astronaut_inputs()
    q = backend.module.dense_crf(backend.from_nhwc(unary[None]), backend.from_nhwc(image[None]),
                                 iterations=generate.ASTRONAUT["iterations"], engine=engine,
                                 **generate.PYDENSECRF_PARAMETERS)
    # float32 lattice sums in another order than pydensecrf's: about 3e-6 after 5 iterations.
    assert_close(backend.to_nhwc(q)[0], _golden("pydensecrf_examples.npz")["astronaut_q"], rtol=0, atol=1e-4,
                 msg=f"{backend} {engine}")


def test_feature_mask_rcnn_postprocessing_golden_is_reproduced_by_every_backend(backend):
    """The golden's inputs through each backend's proposal_layer and detection_layer (matterport's
    defaults) give its stored outputs; it also holds non-trivial detections."""
    golden = _golden("mask_rcnn_postprocessing.npz")
    module = backend.module
    proposals = module.proposal_layer(*(backend.tensor(golden[n]) for n in ("rpn_probs", "rpn_deltas", "anchors")))
    detections = module.detection_layer(*(backend.tensor(golden[n]) for n in ("rois", "class_probs", "class_deltas")))
    assert_close(proposals, golden["proposals"], msg=f"proposals; regenerate with: {REGENERATE}")
    assert_close(detections, golden["detections"], msg=f"detections; regenerate with: {REGENERATE}")
    assert (golden["detections"][..., 5] > 0).sum(axis=1).min() >= 3

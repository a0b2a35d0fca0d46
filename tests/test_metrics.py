"""Segmentation metrics: every backend against a plain-loop NumPy oracle, on random label maps
with empty classes and ignored pixels."""

import numpy as np
import pytest

from impls.testing import assert_close, to_numpy
from tests.strategies import PROFILES, check, installed_frameworks, label_map_cases, lay_out, rng_of, to_backend

IGNORE = 255
SCORES = ("per_class_iou", "mean_iou", "pixel_accuracy", "frequency_weighted_iou")


def loop_confusion(pred, label, num_classes, ignore_index):
    confusion = [[0] * num_classes for _ in range(num_classes)]
    for p, t in zip(pred.ravel().tolist(), label.ravel().tolist(), strict=True):
        if t != ignore_index:
            confusion[t][p] += 1
    return confusion


def loop_scores(confusion):
    """The scores written out class by class from their definitions."""
    classes = len(confusion)
    total = sum(sum(row) for row in confusion)
    ious, weighted = [], 0.0
    for c in range(classes):
        true_positive = confusion[c][c]
        labelled = sum(confusion[c])
        predicted = sum(confusion[r][c] for r in range(classes))
        union = labelled + predicted - true_positive
        iou = true_positive / union if union else float("nan")
        ious.append(iou)
        if labelled:
            weighted += labelled / total * iou
    present = [iou for iou in ious if iou == iou]
    return {"per_class_iou": np.array(ious),
            "mean_iou": sum(present) / len(present) if present else float("nan"),
            "pixel_accuracy": sum(confusion[c][c] for c in range(classes)) / total if total else float("nan"),
            "frequency_weighted_iou": weighted if total else float("nan")}


def random_maps(rng, shape, num_classes, used, ignored_fraction=0.1):
    """pred and label using only `used` of the classes (the rest stay empty), some labels ignored."""
    classes = rng.choice(num_classes, size=used, replace=False)
    label = classes[rng.integers(0, used, shape)].astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.7, label, classes[rng.integers(0, used, shape)]).astype(np.int64)
    label[rng.random(shape) < ignored_fraction] = IGNORE
    return pred, label


@pytest.mark.parametrize("shape, num_classes, used", [((37, 41), 5, 5), ((2, 23, 19), 21, 6), ((3, 8, 8), 4, 1)])
def test_feature_metrics_match_the_loop_oracle(backend, rng, shape, num_classes, used):
    pred, label = random_maps(rng, shape, num_classes, used)
    expected_confusion = loop_confusion(pred, label, num_classes, IGNORE)
    module = backend.module
    confusion = module.confusion_matrix(backend.tensor(pred), backend.tensor(label), num_classes)
    np.testing.assert_array_equal(to_numpy(confusion), np.array(expected_confusion))
    expected = loop_scores(expected_confusion)
    for score in SCORES:
        got = to_numpy(getattr(module, score)(confusion))
        assert_close(np.asarray(got, np.float64), np.asarray(expected[score], np.float64), equal_nan=True,
                     msg=f"{backend} {score}")


def test_feature_backends_agree_on_a_dataset_sum(rng):
    import impls.numpy

    confusion = sum(impls.numpy.confusion_matrix(*random_maps(rng, (16, 16), 7, 4), 7) for _ in range(5))
    expected = loop_scores(confusion.tolist())
    for score in SCORES:
        assert_close(np.asarray(getattr(impls.numpy, score)(confusion)), np.asarray(expected[score]), equal_nan=True,
                     msg=score)


def test_feature_hand_computed_example(backend):
    label = np.array([[0, 0, 1, 1], [0, 2, 2, IGNORE]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 3]], dtype=np.int64)
    module = backend.module
    confusion = module.confusion_matrix(backend.tensor(pred), backend.tensor(label), 4)
    # rows = truth: class 0 -> {0: 2, 1: 1}; class 1 -> {1: 2}; class 2 -> {2: 1, 0: 1}; class 3 empty.
    np.testing.assert_array_equal(to_numpy(confusion), [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    iou = to_numpy(module.per_class_iou(confusion))
    np.testing.assert_allclose(iou[:3], [2 / 4, 2 / 3, 1 / 2])
    assert np.isnan(iou[3])  # neither labelled nor predicted: no IoU, skipped by the mean
    np.testing.assert_allclose(to_numpy(module.mean_iou(confusion)), (1 / 2 + 2 / 3 + 1 / 2) / 3)
    np.testing.assert_allclose(to_numpy(module.pixel_accuracy(confusion)), 5 / 7)
    weighted = 3 / 7 * 1 / 2 + 2 / 7 * 2 / 3 + 2 / 7 * 1 / 2
    np.testing.assert_allclose(to_numpy(module.frequency_weighted_iou(confusion)), weighted)


def test_feature_predicted_but_absent_class_scores_zero_not_nan(backend):
    module = backend.module
    label, pred = np.zeros((2, 2), np.int64), np.array([[0, 0], [0, 1]])
    iou = to_numpy(module.per_class_iou(module.confusion_matrix(backend.tensor(pred),
                                                                backend.tensor(label), 2)))
    np.testing.assert_allclose(iou, [3 / 4, 0.0])


def test_feature_everything_ignored_gives_nan_scores(backend):
    module = backend.module
    label = np.full((3, 3), IGNORE, np.uint8)
    confusion = module.confusion_matrix(backend.tensor(np.zeros((3, 3), np.int64)), backend.tensor(label), 3)
    assert to_numpy(confusion).sum() == 0
    for score in ("mean_iou", "pixel_accuracy", "frequency_weighted_iou"):
        assert np.isnan(to_numpy(getattr(module, score)(confusion))), score


def test_feature_ignore_index_none_counts_every_pixel():
    import impls.numpy

    label = np.array([[0, 1], [1, 1]])
    assert impls.numpy.confusion_matrix(label, label, 2, ignore_index=None).sum() == 4


@pytest.mark.parametrize("pred, label, num_classes, error, match", [
    (np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64), 2, ValueError, r"same shape, got \(2, 3\) and \(3, 2\)"),
    (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int64), 2, TypeError, "'pred' must hold integer labels"),
    (np.zeros((2, 2), np.int64), np.full((2, 2), 7), 5, ValueError, r"'label' has 4 of 4 values outside \[0, 5\)"),
    (np.full((2, 2), 5), np.zeros((2, 2), np.int64), 5, ValueError, r"'pred' has 4 of 4 values outside \[0, 5\)"),
    (np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64), 0, ValueError, "'num_classes' must be a positive"),
])
def test_exception_bad_label_maps(backend, pred, label, num_classes, error, match):
    with pytest.raises(error, match=match):
        backend.module.confusion_matrix(backend.tensor(pred), backend.tensor(label), num_classes)


def test_exception_confusion_not_square(backend):
    with pytest.raises(ValueError, match=r"square \(C, C\) matrix, got shape \(2, 3\)"):
        backend.module.mean_iou(backend.tensor(np.zeros((2, 3), np.int64)))


@pytest.mark.parametrize("profile", PROFILES)
def test_property_metrics_equal_brute_force_and_backends_batch_sums_and_labels_permute(profile):
    """Hypothesis (tests/strategies.py): 1 to 255 classes, all or none of the pixels ignored, every layout."""
    import impls.numpy

    backends = installed_frameworks()

    def prop(case):
        pred, label, classes, how, seed = case
        p, t = lay_out(pred, how), lay_out(label, how)
        confusion = impls.numpy.confusion_matrix(p, t, classes)
        np.testing.assert_array_equal(p, pred)
        np.testing.assert_array_equal(t, label)
        assert confusion.dtype == np.int64 and confusion.shape == (classes, classes)
        np.testing.assert_array_equal(confusion, loop_confusion(pred, label, classes, IGNORE))
        # A batch's confusion is the sum of its images'.
        np.testing.assert_array_equal(sum(impls.numpy.confusion_matrix(p[n], t[n], classes) for n in range(len(p))),
                                      confusion)
        iou = impls.numpy.per_class_iou(confusion)
        assert iou.shape == (classes,)
        assert np.all(np.isnan(iou) | ((iou >= 0) & (iou <= 1)))
        mean = impls.numpy.mean_iou(confusion)
        if np.isnan(iou).all():
            assert np.isnan(mean)
        else:
            assert np.isclose(mean, np.nanmean(iou))
        accuracy = impls.numpy.pixel_accuracy(confusion)
        labelled = np.count_nonzero(label != 255)
        if labelled:
            assert np.isclose(accuracy, np.count_nonzero((pred == label) & (label != 255)) / labelled)
        else:
            assert np.isnan(accuracy)
        # Renaming the classes permutes the matrix and leaves the scores unchanged.
        permutation = rng_of(seed).permutation(classes)
        relabel = np.where(label == 255, 255, permutation[np.minimum(label, classes - 1)])
        permuted = impls.numpy.confusion_matrix(permutation[pred], relabel, classes)
        expected = np.zeros_like(confusion)
        expected[np.ix_(permutation, permutation)] = confusion
        np.testing.assert_array_equal(permuted, expected)
        assert_close(impls.numpy.per_class_iou(permuted)[permutation], iou, equal_nan=True)
        assert_close(impls.numpy.mean_iou(permuted), mean, equal_nan=True)
        assert_close(impls.numpy.pixel_accuracy(permuted), accuracy, equal_nan=True)
        for backend in backends:
            got = backend.module.confusion_matrix(to_backend(backend, pred, how), to_backend(backend, label, how),
                                                  classes)
            np.testing.assert_array_equal(np.asarray(got), confusion, err_msg=str(backend))
            for score, value in (("per_class_iou", iou), ("mean_iou", mean), ("pixel_accuracy", accuracy)):
                assert_close(np.asarray(getattr(backend.module, score)(got)), np.asarray(value), equal_nan=True,
                             rtol=1e-6, atol=1e-12, msg=f"{backend} {score}")

    check(profile, label_map_cases(), prop)

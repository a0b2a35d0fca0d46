"""CrfRnn(trainable_widths=True): the kernel widths learnt through log weights, in torch and Keras.

- trainable_widths=False adds nothing; True starts at the fixed-width layer's output.
- The log widths' gradients agree between torch and Keras, and with impls.torch.dense_crf's width
  gradients (chain rule through exp) where the layer is the dense CRF (impls._crfrnn.CrfRnnDoc).
- Optimisers move the widths, which stay positive; Keras' model.fit does so traced.
- The log widths are saved, loaded and ported by name like the layer's matrices.
"""

import numpy as np
import pytest

from impls import _crfrnn, native
from tests.inputs import crf_image, smooth_unary

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
import impls.tf  # noqa: E402
import impls.torch  # noqa: E402
from impls import port  # noqa: E402

BATCH, HEIGHT, WIDTH, CLASSES, ITERATIONS = 2, 8, 10, 3, 3
# Widths the 8x10 crops feel (theta_alpha=160 spans the image: its gradient would be ~0).
THETAS = dict(theta_alpha=6.0, theta_beta=20.0, theta_gamma=2.0)
ENGINES = ["framework", pytest.param("native", marks=pytest.mark.skipif(not native.available(),
                                                                         reason="impls._native is not built"))]


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch):
    """The lattice the layers use eagerly: native where built (their default), else the framework's."""
    if request.param == "framework":
        monkeypatch.setattr(native, "available", lambda: False)
    return request.param


def _inputs(dtype=np.float64):
    """(logits (N, H, W, C), images (N, H, W, 3) uint8, upstream (N, H, W, C)): real image crops,
    smooth unaries, a fixed random weighting of the output for the loss."""
    source = crf_image("im1")
    images = np.stack([source[20 * n:20 * n + HEIGHT, 30 * n:30 * n + WIDTH] for n in range(BATCH)])
    logits = np.stack([-smooth_unary(HEIGHT, WIDTH, CLASSES, seed=n, smoothness=3.0) for n in range(BATCH)])
    upstream = np.random.default_rng(0).standard_normal(logits.shape)
    return logits.astype(dtype), images, upstream.astype(dtype)


def _nchw(array):
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def _torch_layer(trainable_widths=True):
    """A float64 torch layer whose log widths are the logs of THETAS in float64 (the constructor's
    float32 ones, cast, would be 1e-8 off)."""
    layer = impls.torch.CrfRnn(CLASSES, iterations=ITERATIONS, trainable_widths=trainable_widths, **THETAS).double()
    if trainable_widths:
        with torch.no_grad():
            for name, value in zip(_crfrnn.WIDTH_NAMES, _crfrnn.initial_log_widths(layer.config), strict=True):
                getattr(layer, name).fill_(float(value))
    return layer


def _keras_layer(trainable_widths=True, **kwargs):
    return impls.tf.CrfRnn(CLASSES, iterations=ITERATIONS, trainable_widths=trainable_widths, dtype="float64",
                           **THETAS, **kwargs)


def _torch_output(layer, logits, images):
    return layer(_nchw(logits), _nchw(images)).detach().numpy().transpose(0, 2, 3, 1)


def _torch_width_gradients(layer, logits, images, upstream):
    layer.zero_grad()
    (layer(_nchw(logits), _nchw(images)) * _nchw(upstream)).sum().backward()
    return np.array([getattr(layer, name).grad.item() for name in _crfrnn.WIDTH_NAMES])


def _keras_width_gradients(layer, logits, images, upstream, *, traced=False):
    def gradients(logits, images):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(logits, images) * upstream)
        return tape.gradient(loss, [getattr(layer, name) for name in _crfrnn.WIDTH_NAMES])

    return np.array([float(g) for g in (tf.function(gradients) if traced else gradients)(logits, images)])


def _relative(ours, reference):
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def test_smoke_fixed_widths_add_no_weights():
    assert list(impls.torch.CrfRnn(CLASSES).state_dict()) == list(_crfrnn.WEIGHT_NAMES)
    keras_layer = impls.tf.CrfRnn(CLASSES, name="crf")
    assert [w.path for w in keras_layer.weights] == [f"crf/{name}" for name in _crfrnn.WEIGHT_NAMES]
    assert impls.torch.CrfRnn(CLASSES, **THETAS).thetas == impls.tf.CrfRnn(CLASSES, **THETAS).thetas \
        == tuple(THETAS.values())
    assert keras_layer.get_config()["trainable_widths"] is False


def test_smoke_trainable_widths_add_three_scalar_log_weights():
    torch_layer = impls.torch.CrfRnn(CLASSES, trainable_widths=True, **THETAS)
    keras_layer = impls.tf.CrfRnn(CLASSES, trainable_widths=True, name="crf", **THETAS)
    state = torch_layer.state_dict()
    assert list(state) == list(_crfrnn.WEIGHT_NAMES + _crfrnn.WIDTH_NAMES)
    assert [w.path for w in keras_layer.weights] == [f"crf/{n}" for n in _crfrnn.WEIGHT_NAMES + _crfrnn.WIDTH_NAMES]
    for name, theta in zip(_crfrnn.WIDTH_NAMES, THETAS.values(), strict=True):
        variable = getattr(keras_layer, name)
        assert (state[name].shape, state[name].dtype) == ((), torch.float32)
        assert (tuple(variable.shape), variable.dtype, variable.trainable) == ((), "float32", True)
        np.testing.assert_allclose([state[name].item(), float(variable.numpy())], np.log(theta), rtol=1e-7)
    np.testing.assert_allclose(torch_layer.thetas, list(THETAS.values()), rtol=1e-6)
    np.testing.assert_allclose(keras_layer.thetas, list(THETAS.values()), rtol=1e-6)


def test_feature_initial_trainable_widths_give_the_fixed_width_output(engine):
    logits, images, _ = _inputs()
    fixed = _torch_output(_torch_layer(False), logits, images)
    np.testing.assert_allclose(_torch_output(_torch_layer(True), logits, images), fixed, rtol=0, atol=1e-12)
    keras_fixed = _keras_layer(False)(logits, images).numpy()
    np.testing.assert_allclose(_keras_layer(True)(logits, images).numpy(), keras_fixed, rtol=0, atol=1e-12)
    np.testing.assert_allclose(keras_fixed, fixed, rtol=0, atol=1e-12)


def test_feature_torch_and_keras_width_gradients_agree(engine):
    logits, images, upstream = _inputs()
    ours = _torch_width_gradients(_torch_layer(), logits, images, upstream)
    theirs = _keras_width_gradients(_keras_layer(), logits, images, upstream)
    assert np.isfinite(ours).all() and (ours != 0).all(), ours
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)


def test_feature_keras_traced_width_gradients_equal_eager(monkeypatch):
    monkeypatch.setattr(native, "available", lambda: False)  # eager on the lattice a trace uses
    logits, images, upstream = _inputs()
    layer = impls.tf.CrfRnn(CLASSES, iterations=1, trainable_widths=True, dtype="float64", **THETAS)  # a quick trace
    eager = _keras_width_gradients(layer, logits, images, upstream)
    traced = _keras_width_gradients(layer, logits, images, upstream, traced=True)
    assert (eager != 0).all()
    np.testing.assert_allclose(traced, eager, rtol=1e-10, atol=0)


def test_gradcheck_log_width_gradients_are_dense_crfs_width_gradients_by_the_chain_rule(monkeypatch):
    """With spatial w_g I, bilateral w_b I and compatibility -I, softmax(layer) is dense_crf(-logits,
    normalization="after"); d loss / d log theta = theta d loss / d theta."""
    monkeypatch.setattr(native, "available", lambda: False)  # float64 throughout: dense_crf's framework engine
    logits, images, upstream = _inputs()
    layer = _torch_layer()
    layer.zero_grad()
    q = torch.softmax(layer(_nchw(logits), _nchw(images)), dim=1)
    (q * _nchw(upstream)).sum().backward()
    ours = np.array([getattr(layer, name).grad.item() for name in _crfrnn.WIDTH_NAMES])

    thetas = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in THETAS.items()}
    q = impls.torch.dense_crf(-_nchw(logits), _nchw(images), gaussian_sxy=thetas["theta_gamma"],
                              gaussian_compat=_crfrnn.SPATIAL_WEIGHT, bilateral_sxy=thetas["theta_alpha"],
                              bilateral_srgb=thetas["theta_beta"], bilateral_compat=_crfrnn.BILATERAL_WEIGHT,
                              iterations=ITERATIONS, normalization="after", engine="framework")
    (q * _nchw(upstream)).sum().backward()
    chain_rule = np.array([THETAS[name] * thetas[name].grad.item() for name in _crfrnn.THETA_NAMES])
    assert (chain_rule != 0).all()
    assert _relative(ours, chain_rule) < 1e-8, (ours, chain_rule)


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_feature_torch_optimiser_steps_move_the_widths_and_keep_them_positive(optimizer):
    logits, images, _ = _inputs(np.float32)
    target = torch.from_numpy(np.random.default_rng(1).integers(0, CLASSES, (BATCH, HEIGHT, WIDTH)))
    layer = impls.torch.CrfRnn(CLASSES, iterations=ITERATIONS, trainable_widths=True, **THETAS)
    widths = [getattr(layer, name) for name in _crfrnn.WIDTH_NAMES]
    step = getattr(torch.optim, optimizer)(widths, lr=0.1 if optimizer == "Adam" else 5.0)
    losses = []
    for _ in range(4):
        step.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(_nchw(logits), _nchw(images)), target)
        loss.backward()
        step.step()
        losses.append(loss.item())
    moved = np.array(layer.thetas) / np.array(list(THETAS.values()))
    assert np.isfinite(moved).all() and (moved > 0).all()
    assert (np.abs(np.log(moved)) > 1e-3).all(), moved
    assert losses[-1] < losses[0], losses


def test_feature_keras_fit_moves_the_widths_traced(monkeypatch):
    logits, images, _ = _inputs(np.float32)
    target = np.random.default_rng(1).integers(0, CLASSES, (BATCH, HEIGHT, WIDTH))
    eager_calls = []
    ops_for = impls.tf.crfrnn.ops_for
    monkeypatch.setattr(impls.tf.crfrnn, "ops_for", lambda name: eager_calls.append(tf.executing_eagerly())
                        or ops_for(name))
    unaries, image = keras.Input((HEIGHT, WIDTH, CLASSES)), keras.Input((HEIGHT, WIDTH, 3), dtype="uint8")
    layer = impls.tf.CrfRnn(CLASSES, iterations=1, trainable_widths=True, **THETAS)  # 1: tracing takes seconds
    model = keras.Model([unaries, image], layer(unaries, image))
    eager_calls.clear()  # whatever building the functional model ran
    # No XLA: the lattice's vertex count depends on the data (XLA refuses its segment sums).
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), jit_compile=False)
    model.fit([logits, images], target, epochs=1, batch_size=1, verbose=0)  # two steps, one trace
    assert eager_calls and not any(eager_calls)
    moved = np.array(layer.thetas) / np.array(list(THETAS.values()))
    assert np.isfinite(moved).all() and (moved > 0).all()
    assert (np.abs(np.log(moved)) > 1e-3).all(), moved


def _trained_torch_layer():
    layer = impls.torch.CrfRnn(CLASSES, iterations=ITERATIONS, trainable_widths=True, **THETAS)
    with torch.no_grad():
        for parameter, value in zip(layer.parameters(), np.random.default_rng(2).standard_normal(6), strict=True):
            parameter.add_(float(value))
    return layer


def test_feature_torch_state_dict_round_trips_the_widths(tmp_path):
    layer = _trained_torch_layer()
    torch.save(layer.state_dict(), tmp_path / "crfrnn.pt")
    loaded = impls.torch.CrfRnn(CLASSES, iterations=ITERATIONS, trainable_widths=True, **THETAS)
    loaded.load_state_dict(torch.load(tmp_path / "crfrnn.pt", weights_only=True))
    assert loaded.thetas == layer.thetas != tuple(THETAS.values())
    logits, images, _ = _inputs(np.float32)
    np.testing.assert_array_equal(_torch_output(loaded, logits, images), _torch_output(layer, logits, images))
    with pytest.raises(RuntimeError, match="log_theta_alpha"):
        impls.torch.CrfRnn(CLASSES, **THETAS).load_state_dict(layer.state_dict())


def test_feature_keras_config_and_weight_file_round_trip_the_widths(tmp_path):
    logits, images, _ = _inputs(np.float32)
    layer = impls.tf.CrfRnn(CLASSES, iterations=ITERATIONS, trainable_widths=True, name="crf", **THETAS)
    clone = impls.tf.CrfRnn.from_config(layer.get_config())
    assert clone.config == layer.config and clone.config["trainable_widths"] is True

    def model_of(crf):
        unaries, image = keras.Input((HEIGHT, WIDTH, CLASSES)), keras.Input((HEIGHT, WIDTH, 3), dtype="uint8")
        return keras.Model([unaries, image], crf(unaries, image))

    model = model_of(layer)
    for name, value in zip(_crfrnn.WIDTH_NAMES, (1.5, 2.5, 0.5), strict=True):
        getattr(layer, name).assign(value)
    model.save_weights(tmp_path / "crfrnn.weights.h5")
    reloaded = model_of(clone)
    reloaded.load_weights(tmp_path / "crfrnn.weights.h5")
    assert clone.thetas == layer.thetas
    np.testing.assert_allclose(clone.thetas, np.exp([1.5, 2.5, 0.5]), rtol=1e-6)
    np.testing.assert_array_equal(reloaded([logits, images]).numpy(), model([logits, images]).numpy())


def test_feature_port_torch_to_tf_and_back_carries_the_widths():
    source = _trained_torch_layer()
    keras_layer = impls.tf.CrfRnn(CLASSES, iterations=ITERATIONS, trainable_widths=True, name="crf", **THETAS)
    report = port.torch_to_tf(source, keras_layer)
    assert [name for name, _ in report.moved] == [f"crf/{n}" for n in _crfrnn.WEIGHT_NAMES + _crfrnn.WIDTH_NAMES]
    assert keras_layer.thetas == source.thetas
    back = impls.torch.CrfRnn(CLASSES, iterations=ITERATIONS, trainable_widths=True, **THETAS)
    port.tf_to_torch(keras_layer, back)
    for name, value in source.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=0)
    logits, images, _ = _inputs(np.float32)
    np.testing.assert_allclose(keras_layer(logits, images).numpy(), _torch_output(source, logits, images),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("torch_widths", [True, False])
def test_exception_port_refuses_one_sided_trainable_widths(torch_widths):
    keras_layer = impls.tf.CrfRnn(CLASSES, trainable_widths=not torch_widths, name="crf")
    keras_layer.build(None)
    before = [w.numpy().copy() for w in keras_layer.weights]
    with pytest.raises(ValueError, match=f"port: CrfRnn 'crf' has trainable_widths={torch_widths} in torch but "
                                         f"{not torch_widths} in Keras; nothing was copied"):
        port.torch_to_tf(impls.torch.CrfRnn(CLASSES, trainable_widths=torch_widths), keras_layer)
    for variable, value in zip(keras_layer.weights, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.mark.parametrize("module", ["torch", "tf"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_exception_bad_trainable_widths_is_refused_by_name(module, value):
    with pytest.raises(TypeError, match=f"CrfRnn: argument 'trainable_widths' must be a bool, got {value!r}"):
        getattr(impls, module).CrfRnn(CLASSES, trainable_widths=value)

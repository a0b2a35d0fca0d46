"""CRF-as-RNN in torch and Keras: tied to the dense CRF (and so to pydensecrf), the same function
and gradients in both frameworks, gradcheck, batching, both lattices, porting, saving, bad input."""

import numpy as np
import pytest
from hypothesis import strategies as st

from impls import native
from impls._crfrnn import WEIGHT_NAMES
from impls.testing import Backend, assert_close
from tests.inputs import crf_image
from tests.strategies import FRAMEWORKS, PROFILES, SEEDS, check, crfrnn_cases, framework, lay_out, rng_of, torch_nchw

THETAS = dict(theta_alpha=160, theta_beta=3, theta_gamma=3)


def inputs(rng, batch=3, height=37, width=45, classes=4):
    """(logits (N, H, W, C) float32, images (N, H, W, 3) uint8): odd sizes, real image crops."""
    source = crf_image("astronaut")
    images = np.stack([source[40 * n:40 * n + height, 60 * n:60 * n + width] for n in range(batch)])
    return (rng.standard_normal((batch, height, width, classes)) * 2).astype(np.float32), images


def make_layer(backend, classes, weights=None, **kwargs):
    layer = backend.module.CrfRnn(classes, **kwargs)
    if backend.name == "torch":
        layer = layer.to(backend.device)
    if weights is not None:
        set_weights(backend, layer, weights)
    return layer


def set_weights(backend, layer, weights):
    for name, value in zip(WEIGHT_NAMES, weights, strict=True):
        target = getattr(layer, name)
        if backend.name == "torch":
            import torch

            with torch.no_grad():
                target.copy_(torch.from_numpy(value))
        else:
            target.assign(value)


def run(backend, layer, logits, images):
    """Output logits as NHWC NumPy."""
    return backend.to_nhwc(layer(backend.from_nhwc(logits), backend.from_nhwc(images)))


def random_weights(rng, classes):
    return [rng.standard_normal((classes, classes)).astype(np.float32) for _ in WEIGHT_NAMES]


def test_smoke_default_weights_are_the_caffe_models_potts_initialisation(layer_backend):
    layer = make_layer(layer_backend, 3)
    values = {name: np.asarray(getattr(layer, name).detach().cpu() if layer_backend.name == "torch"
                               else getattr(layer, name).numpy()) for name in WEIGHT_NAMES}
    np.testing.assert_array_equal(values["spatial_ker_weights"], 3 * np.eye(3))
    np.testing.assert_array_equal(values["bilateral_ker_weights"], 5 * np.eye(3))
    np.testing.assert_array_equal(values["compatibility_matrix"], -np.eye(3))


@pytest.mark.parametrize("w_g, w_b", [(3.0, 5.0), (1.0, 1.0), (0.5, 8.0)])
def test_feature_potts_weights_equal_dense_crf_normalize_after(layer_backend, rng, w_g, w_b):
    import impls.numpy

    logits, images = inputs(rng, batch=2)
    classes = logits.shape[-1]
    eye = np.eye(classes, dtype=np.float32)
    layer = make_layer(layer_backend, classes, [w_g * eye, w_b * eye, -eye], iterations=5, **THETAS)
    out = run(layer_backend, layer, logits, images)
    q = np.exp(out - out.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    expected = impls.numpy.dense_crf(-logits, images, gaussian_sxy=3, gaussian_compat=w_g, bilateral_sxy=160,
                                     bilateral_srgb=3, bilateral_compat=w_b, iterations=5, normalization="after",
                                     engine="framework")
    assert_close(q, expected, rtol=0, atol=1e-4, msg=f"{layer_backend} vs dense_crf")


def test_feature_torch_and_tf_agree_in_outputs_and_gradients(rng):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("tensorflow")
    import impls.tf
    import impls.torch

    logits, images = inputs(rng)
    weights = random_weights(rng, logits.shape[-1])
    torch_layer, keras_layer = impls.torch.CrfRnn(4), impls.tf.CrfRnn(4)
    set_weights(Backend("torch"), torch_layer, weights)
    set_weights(Backend("tf"), keras_layer, weights)
    upstream = rng.standard_normal(logits.shape).astype(np.float32)

    torch_logits = torch.from_numpy(logits.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    torch_out = torch_layer(torch_logits, torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    (torch_out * torch.from_numpy(upstream.transpose(0, 3, 1, 2).copy())).sum().backward()

    tf_logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(tf_logits)
        tf_out = keras_layer(tf_logits, tf.constant(images))
        loss = tf.reduce_sum(tf_out * upstream)
    tf_grads = tape.gradient(loss, [tf_logits] + [getattr(keras_layer, n) for n in WEIGHT_NAMES])

    assert_close(torch_out.detach().numpy().transpose(0, 2, 3, 1), tf_out.numpy(), rtol=1e-5, atol=1e-5,
                 msg="outputs")  # float32 sums in two orders over 5 iterations
    grads = [torch_logits.grad.numpy().transpose(0, 2, 3, 1)] + [getattr(torch_layer, n).grad.numpy()
                                                                 for n in WEIGHT_NAMES]
    for name, ours, theirs in zip(("unaries",) + WEIGHT_NAMES, grads, tf_grads, strict=True):
        relative = np.abs(ours - theirs.numpy()).max() / np.abs(theirs.numpy()).max()
        assert relative <= 1e-4, f"gradient w.r.t. {name}: max relative difference {relative:.2e}"


def test_feature_batch_equals_single_images(layer_backend, rng):
    logits, images = inputs(rng)
    layer = make_layer(layer_backend, 4, random_weights(rng, 4), iterations=3)
    batched = run(layer_backend, layer, logits, images)
    for n in range(len(logits)):
        assert_close(batched[n], run(layer_backend, layer, logits[n:n + 1], images[n:n + 1])[0], msg=f"image {n}")


def test_feature_native_and_framework_lattices_agree(layer_backend, rng, monkeypatch):
    if not native.available():
        pytest.skip("impls._native is not built")
    logits, images = inputs(rng, batch=2)
    layer = make_layer(layer_backend, 4, random_weights(rng, 4))
    with_native = run(layer_backend, layer, logits, images)
    monkeypatch.setattr(native, "available", lambda: False)
    framework = run(layer_backend, layer, logits, images)
    assert_close(with_native, framework, rtol=1e-4, atol=1e-4)  # float32 lattice sums in another order


def test_gradcheck_torch_float64():
    torch = pytest.importorskip("torch")
    import impls.torch

    generator = np.random.default_rng(5)
    logits, images = inputs(generator, batch=2, height=5, width=6, classes=3)
    layer = impls.torch.CrfRnn(3, iterations=2).double()
    set_weights(Backend("torch"), layer, [w.astype(np.float64) for w in random_weights(generator, 3)])
    image = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    unaries = torch.from_numpy(logits.transpose(0, 3, 1, 2).astype(np.float64)).requires_grad_(True)
    parameters = [getattr(layer, name) for name in WEIGHT_NAMES]

    def function(unaries, *weights):
        for parameter, weight in zip(parameters, weights, strict=True):
            parameter.data = weight
        return torch.func.functional_call(layer, dict(zip(WEIGHT_NAMES, weights, strict=True)), (unaries, image))

    weights = [p.detach().clone().requires_grad_(True) for p in parameters]
    assert torch.autograd.gradcheck(function, (unaries, *weights), eps=1e-6, atol=1e-5)


def test_gradcheck_tf_compute_gradient():
    tf = pytest.importorskip("tensorflow")
    import impls.tf

    generator = np.random.default_rng(6)
    logits, images = inputs(generator, batch=1, height=5, width=6, classes=3)
    layer = impls.tf.CrfRnn(3, iterations=2)
    set_weights(Backend("tf"), layer, random_weights(generator, 3))
    image = tf.constant(images)
    # layer.call, not layer(...): Keras' __call__ casts inputs to the layer's float32 compute dtype.
    theoretical, numerical = tf.test.compute_gradient(lambda x: layer.call(x, image),
                                                      [tf.constant(logits.astype(np.float64))], delta=1e-6)
    assert_close(theoretical[0], numerical[0], rtol=1e-5, atol=1e-6)


def test_smoke_tf_inside_tf_function_equals_eager(rng):
    tf = pytest.importorskip("tensorflow")
    import impls.tf

    logits, images = inputs(rng, batch=2)
    layer = impls.tf.CrfRnn(4)
    set_weights(Backend("tf"), layer, random_weights(rng, 4))
    traced = tf.function(layer.__call__, input_signature=[tf.TensorSpec([None, None, None, 4], tf.float32),
                                                          tf.TensorSpec([None, None, None, 3], tf.uint8)])
    assert_close(traced(logits, images).numpy(), layer(logits, images).numpy(), rtol=1e-4, atol=1e-4)


def test_feature_port_torch_to_tf_and_back(rng):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    import impls.tf
    import impls.torch
    from impls import port

    logits, images = inputs(rng, batch=1)
    torch_layer, keras_layer = impls.torch.CrfRnn(4), impls.tf.CrfRnn(4, name="crf_rnn")
    set_weights(Backend("torch"), torch_layer, random_weights(rng, 4))
    report = port.torch_to_tf(torch_layer, keras_layer)
    assert [name for name, _ in report.moved] == [f"crf_rnn/{name}" for name in WEIGHT_NAMES]
    assert "3 weight(s) of 1 layer(s) moved" in str(report)
    assert_close(run(Backend("tf"), keras_layer, logits, images), run(Backend("torch"), torch_layer, logits, images),
                 rtol=1e-5, atol=1e-5)
    back = impls.torch.CrfRnn(4)
    port.tf_to_torch(keras_layer, back)
    for name in WEIGHT_NAMES:
        np.testing.assert_array_equal(getattr(back, name).detach().numpy(), getattr(torch_layer, name).detach().numpy())


def test_exception_port_refuses_mismatched_layers():
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    import impls.tf
    import impls.torch
    from impls import port

    keras_layer = impls.tf.CrfRnn(5, name="crf_rnn")
    before = keras_layer.spatial_ker_weights.numpy().copy()
    with pytest.raises(ValueError, match=r"shapes differ after the layout change \(crf_rnn/spatial_ker_weights: "
                                         r"torch \(4, 4\) vs Keras \(5, 5\)"):
        port.torch_to_tf(impls.torch.CrfRnn(4), keras_layer)
    np.testing.assert_array_equal(keras_layer.spatial_ker_weights.numpy(), before)
    with pytest.raises(ValueError, match=r"no porting rule for torch layer type Linear"):
        port.torch_to_tf(__import__("torch").nn.Linear(2, 2, bias=False), keras_layer)
    model = __import__("torch").nn.Sequential()
    model.add_module("crf", impls.torch.CrfRnn(5))
    with pytest.raises(ValueError, match=r"only in torch: \['crf'\], only in Keras: \['<top level>'\]"):
        port.torch_to_tf(model, keras_layer)


def test_feature_keras_layer_config_round_trips_name_and_dtype(rng):
    pytest.importorskip("tensorflow")
    import impls.tf

    layer = impls.tf.CrfRnn(3, iterations=2, name="refine", dtype="float64")
    clone = impls.tf.CrfRnn.from_config(layer.get_config())
    assert (clone.name, clone.dtype, clone.config) == ("refine", "float64", layer.config)
    logits, images = inputs(rng, batch=1, classes=3)
    assert_close(run(Backend("tf"), clone, logits, images), run(Backend("tf"), layer, logits, images))


def test_exception_torch_layer_takes_only_a_name():
    pytest.importorskip("torch")
    import impls.torch

    assert impls.torch.CrfRnn(3, name="refine").name == "refine"
    with pytest.raises(TypeError, match=r"CrfRnn: unexpected keyword argument\(s\) \['dtype'\]"):
        impls.torch.CrfRnn(3, dtype="float64")


def test_feature_save_and_load_in_each_framework(tmp_path, rng):
    torch = pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    import impls.tf
    import impls.torch

    logits, images = inputs(rng, batch=1)
    weights = random_weights(rng, 4)
    torch_layer = impls.torch.CrfRnn(4, iterations=3)
    set_weights(Backend("torch"), torch_layer, weights)
    torch.save(torch_layer.state_dict(), tmp_path / "crfrnn.pt")
    loaded = impls.torch.CrfRnn(4, iterations=3)
    loaded.load_state_dict(torch.load(tmp_path / "crfrnn.pt", weights_only=True))
    assert_close(run(Backend("torch"), loaded, logits, images), run(Backend("torch"), torch_layer, logits, images))

    unaries, image = keras.Input((None, None, 4)), keras.Input((None, None, 3), dtype="uint8")
    model = keras.Model([unaries, image], impls.tf.CrfRnn(4, iterations=3)(unaries, image))
    set_weights(Backend("tf"), model.layers[-1], weights)
    model.save(tmp_path / "crfrnn.keras")
    reloaded = keras.saving.load_model(tmp_path / "crfrnn.keras")
    assert reloaded.layers[-1].get_config() == model.layers[-1].get_config()
    assert_close(reloaded.predict([logits, images], verbose=0), model.predict([logits, images], verbose=0))


@pytest.mark.parametrize("change, error, match", [
    (dict(logits_shape=(3, 37, 45, 5)), ValueError, r"'logits' must have num_classes=4 channels"),
    (dict(image_shape=(3, 37, 44, 3)), ValueError, r"'image' must have the logits' \(H, W\) = \(37, 45\)"),
    (dict(image_shape=(2, 37, 45, 3)), ValueError, "the same batch size, got 3 and 2"),
    (dict(image_shape=(3, 37, 45, 4)), ValueError, "3 colour channels, got 4"),
    (dict(nan=True), ValueError, r"'logits' must be finite"),
])
def test_exception_bad_input(layer_backend, rng, change, error, match):
    logits, images = inputs(rng)
    logits = np.zeros(change.get("logits_shape", logits.shape), np.float32)
    images = np.zeros(change.get("image_shape", images.shape), np.uint8)
    if change.get("nan"):
        logits[0, 1, 2, 3] = np.nan
    with pytest.raises(error, match=match):
        run(layer_backend, make_layer(layer_backend, 4), logits, images)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=4, iterations=0), "'iterations' must be a positive integer"),
    (dict(num_classes=1), "'num_classes' must be at least 2"),
    (dict(num_classes=4, theta_alpha=-1), "'theta_alpha' must be a positive number"),
])
def test_exception_bad_configuration(layer_backend, kwargs, match):
    with pytest.raises(ValueError, match=match):
        layer_backend.module.CrfRnn(**kwargs)


# --- properties (hypothesis; tests/strategies.py) --------------------------------------------------------

def _call_laid_out(backend, layer, logits, image, how="c"):
    """The layer's NHWC output on NHWC inputs given in the backend's layout, as views of `how` (torch)."""
    if backend.name == "torch":
        import torch

        with torch.no_grad():
            return backend.to_nhwc(layer(torch_nchw(logits, how), torch_nchw(image, how)))
    return backend.to_nhwc(layer(backend.tensor(lay_out(logits, how)), backend.tensor(lay_out(image, how))))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_property_crfrnn_with_initial_weights_equals_dense_crf_oracle_and_batch_equals_singles(profile, name):
    """softmax(CrfRnn(logits)) with the initial weights (spatial 3 I, bilateral 5 I, compatibility -I) is
    dense_crf(-logits, normalization="after") (impls._crfrnn's docstring)."""
    import impls.numpy

    backend = framework(name)

    def prop(case):
        logits, image, thetas, how, _ = case
        layer = backend.module.CrfRnn(logits.shape[-1], **thetas)
        out = _call_laid_out(backend, layer, logits, image, how)
        assert out.shape == logits.shape
        expected = impls.numpy.dense_crf(-logits, image, gaussian_sxy=thetas["theta_gamma"], gaussian_compat=3,
                                         bilateral_sxy=thetas["theta_alpha"], bilateral_srgb=thetas["theta_beta"],
                                         bilateral_compat=5, iterations=thetas["iterations"],
                                         normalization="after", engine="framework")
        assert_close(_softmax(out.astype(np.float64)), expected, rtol=0, atol=1e-4, msg=f"{backend} layout {how}")
        singles = np.concatenate([_call_laid_out(backend, layer, logits[n:n + 1], image[n:n + 1])
                                  for n in range(len(logits))])
        assert_close(singles, out, rtol=1e-5, atol=1e-4, msg=f"{backend} singles")

    check(profile, crfrnn_cases(), prop)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_crfrnn_torch_and_keras_agree_with_random_weights_and_leave_inputs_unmutated(profile):
    torch_backend, tf_backend = framework("torch"), framework("tf")

    def prop(case):
        logits, image, thetas, how, seed = case
        classes = logits.shape[-1]
        weights = [rng_of(seed + k).standard_normal((classes, classes)).astype(np.float32) for k in range(3)]
        outputs = []
        for backend in (torch_backend, tf_backend):
            layer = backend.module.CrfRnn(classes, **thetas)
            if backend.name == "tf":
                layer.build(None)
            set_weights(backend, layer, weights)
            x, i = lay_out(logits, how), lay_out(image, how)
            outputs.append(_call_laid_out(backend, layer, x, i, how))
            np.testing.assert_array_equal(x, logits)
            np.testing.assert_array_equal(i, image)
        assert np.isfinite(outputs[0]).all()
        assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4, msg="torch vs keras")

    check(profile, crfrnn_cases(), prop)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_port_round_trip_restores_crfrnn_weights_exactly(profile):
    framework("torch"), framework("tf")
    import torch

    import impls.tf
    import impls.torch
    from impls import port

    def prop(classes_and_seed):
        classes, seed, scale = classes_and_seed
        torch.manual_seed(seed)
        source = impls.torch.CrfRnn(classes)
        with torch.no_grad():
            for parameter in source.parameters():
                parameter.copy_(torch.randn_like(parameter) * scale)
        original = {name: p.detach().numpy().copy() for name, p in source.named_parameters()}
        keras_layer = impls.tf.CrfRnn(classes)
        keras_layer.build(None)
        port.torch_to_tf(source, keras_layer)
        for name in WEIGHT_NAMES:
            np.testing.assert_array_equal(np.asarray(getattr(keras_layer, name).numpy()), original[name],
                                          err_msg=f"torch_to_tf {name}")
        back = impls.torch.CrfRnn(classes)
        port.tf_to_torch(keras_layer, back)
        restored = dict(back.named_parameters())
        assert set(restored) == set(original)
        for name, value in original.items():
            np.testing.assert_array_equal(restored[name].detach().numpy(), value, err_msg=f"round trip {name}")
            np.testing.assert_array_equal(dict(source.named_parameters())[name].detach().numpy(), value)

    check(profile, st.tuples(st.integers(2, 30), SEEDS, st.sampled_from([1e-30, 1.0, 1e30])), prop)

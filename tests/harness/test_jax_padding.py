"""The ``jax`` adapter's bucket padding changes no result and needs no recompilation.

The adapter pads every input to a few bucket shapes (rows to 8, classes to 256 or 4096),
masks the padded rows and passes every option as a traced argument, so that XLA compiles
once per bucket, dtype and target kind (see ``xentcheck.harness.adapters.jax_nn``). Checked here:

- the padded losses and gradients (every reduction, with weights, ``ignore_index`` and
  label smoothing, both target kinds) are bit for bit those of the same JAX code run on the
  unpadded arrays (N >= 2 and K <= 16, where XLA sums the padded rows and classes in the
  order it sums the unpadded ones);
- softmax, log_softmax and logsumexp padded to a bucket are bit for bit those padded to
  the next power of two (the adapter's earlier scheme), short and long rows;
- options, reductions, N and K within a bucket, and the loss after its gradient (one
  ``jax.value_and_grad``), compile nothing new; N = 0 works.

JAX compiles each new shape in 0.1-1 s, so the checks share a handful of shapes.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

from xentcheck.harness.adapters import jax_nn

jax = pytest.importorskip("jax")


@pytest.fixture(scope="module")
def adapter() -> jax_nn.JaxAdapter:
    return jax_nn.load()


@pytest.fixture(scope="module")
def unpadded_loss(adapter: jax_nn.JaxAdapter) -> Any:
    """The adapter's loss code jitted alone, called on arrays of their true shape."""
    jit = functools.partial(jax.jit, compiler_options=jax_nn._compiler_options(jax))
    return jit(jax.value_and_grad(jax_nn._loss_objective, has_aux=True))


def _bits(array: Any) -> np.ndarray:
    """The bytes of an array (at least 1-d), to compare NaNs and signed zeros too."""
    return np.atleast_1d(np.asarray(array)).view(np.uint8)


def _unpadded(function: Any, logits: np.ndarray, target: np.ndarray,
              reduction: str, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    arguments = jax_nn._loss_arguments(logits, target, options.get("weight"),
                                       options.get("ignore_index"),
                                       options.get("label_smoothing", 0.0))
    x, y, weight, smoothing, ignoring, ignored = arguments
    n, k = logits.shape
    (_, loss), grad = function(
        x, y, weight, smoothing, float(jax_nn._reciprocal(k, np.dtype(np.float64))), ignoring,
        ignored, n, jax_nn._reciprocal(n, x.dtype), jax_nn.REDUCTIONS.index(reduction))
    loss = np.asarray(loss)
    return (loss if reduction == "none" else loss[0]), np.asarray(grad)


def test_buckets() -> None:
    assert [jax_nn._row_bucket(n) for n in (0, 1, 8, 9, 100)] == [8, 8, 8, 16, 128]
    assert [jax_nn._col_bucket(k) for k in (1, 16, 256, 257, 4096, 4097)] == [
        256, 256, 256, 4096, 4096, 8192]
    assert [jax_nn._jacobian_col_bucket(k) for k in (1, 16, 17)] == [16, 16, 32]


def test_reciprocal_is_the_folded_constant() -> None:
    # XLA folds x / N into x * (1/N), with 1/N rounded to the dtype of the division;
    # its CPU compiler divides bfloat16 in float32
    assert jax_nn._reciprocal(6, np.dtype(np.float64)) == 1 / 6
    assert jax_nn._reciprocal(6, np.dtype(np.float16)).dtype == np.float16
    bfloat16 = jax_nn._reciprocal(6, np.dtype(jax.numpy.bfloat16))
    assert bfloat16.dtype == np.float32 and bfloat16 == np.float32(1) / np.float32(6)
    assert jax_nn._reciprocal(0, np.dtype(np.float32)) == np.inf


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_padded_loss_is_the_unpadded_computation(
    adapter: jax_nn.JaxAdapter, unpadded_loss: Any, dtype: str
) -> None:
    dt = np.dtype(jax.numpy.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(7)
    n, k = 5, 3
    logits = (rng.normal(size=(n, k)) * 3).astype(dt)
    logits[0, 1] = -np.inf  # padding must not turn 0 * -inf into NaN anywhere
    index = np.array([0, 1, 2, 1, 2])
    ignoring = np.array([0, -100, 2, 1, -100])
    probs = rng.dirichlet(np.ones(k), n).astype(dt)
    probs[0, 1] = 0.0
    weight = np.array([0.5, 2.0, 1.25], dtype=dt)
    cases = [
        (index, {}),
        (ignoring, {"weight": weight, "ignore_index": -100, "label_smoothing": 0.3}),
        (probs, {}),
        (probs, {"weight": weight, "label_smoothing": 0.2}),
    ]
    for target, options in cases:
        for reduction in jax_nn.REDUCTIONS:
            what = f"{dtype} target {target.ndim}-d, {reduction}, {sorted(options)}"
            want_loss, want_grad = _unpadded(unpadded_loss, logits, target, reduction,
                                             **options)
            loss = adapter.cross_entropy(logits, target, reduction=reduction, **options)
            grad = adapter.cross_entropy_grad(logits, target, reduction=reduction, **options)
            assert loss.dtype == dt and loss.shape == want_loss.shape, what
            assert np.array_equal(_bits(loss), _bits(want_loss)), f"{what}: {loss} {want_loss}"
            assert grad.shape == (n, k), what
            assert np.array_equal(_bits(grad), _bits(want_grad)), f"{what}: {grad} {want_grad}"


@pytest.mark.parametrize("k", [3, 300])
def test_rowwise_padding_keeps_the_bits(adapter: jax_nn.JaxAdapter, k: int) -> None:
    rng = np.random.default_rng(k)
    logits = rng.normal(size=(5, k)) * 5
    logits[1, 0] = -np.inf
    cols = jax_nn._bucket(k)
    padded = np.full((8, cols), -np.inf)
    padded[5:] = 0.0
    padded[:5, :k] = logits
    jit = functools.partial(jax.jit, compiler_options=jax_nn._compiler_options(jax))
    for name in ("softmax", "log_softmax", "logsumexp"):
        want = np.asarray(jit(functools.partial(getattr(jax.nn, name), axis=-1))(padded))
        want = want[:5] if want.ndim == 1 else want[:5, :k]
        got = getattr(adapter, name)(logits)
        assert np.array_equal(_bits(got), _bits(want)), f"{name}, K = {k}"


def test_options_and_sizes_within_a_bucket_compile_nothing_new(
    adapter: jax_nn.JaxAdapter,
) -> None:
    rng = np.random.default_rng(3)
    adapter.cross_entropy(rng.normal(size=(4, 6)), np.array([0, 1, 2, 3]))
    compiled = jax_nn._compiled()["loss"]
    before = compiled._cache_size()
    for n, k in [(1, 2), (7, 16), (8, 200)]:
        logits = rng.normal(size=(n, k))
        target = rng.integers(0, k, n)
        adapter.cross_entropy_grad(logits, target)
        for reduction in jax_nn.REDUCTIONS:
            adapter.cross_entropy(logits, target, reduction=reduction, ignore_index=int(target[0]),
                                  label_smoothing=0.25, weight=np.linspace(0.5, 2.0, k))
    assert compiled._cache_size() == before


def test_no_rows(adapter: jax_nn.JaxAdapter) -> None:
    logits, target = np.zeros((0, 6)), np.zeros(0, np.int64)
    assert adapter.cross_entropy(logits, target).shape == (0,)
    assert adapter.cross_entropy(logits, target, reduction="sum") == 0.0
    assert np.isnan(adapter.cross_entropy(logits, target, reduction="mean"))
    assert adapter.cross_entropy_grad(logits, target, reduction="mean").shape == (0, 6)
    assert adapter.softmax(logits).shape == (0, 6)

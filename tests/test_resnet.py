"""Res-50 baseline (Sec. IV-G): parameter count by hand, shapes, 4x4 final pooling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.models.resnet import ResNet50


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _resnet50_backbone_parameters():
  """ResNet-50 without its classifier, layer by layer: convs have no bias, BN has 2*c."""
  total = 7 * 7 * 3 * 64 + 2 * 64  # stem conv + BN
  in_channels = 64
  for features, num_blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
    for block in range(num_blocks):
      out_channels = 4 * features
      total += in_channels * features + 2 * features  # 1x1 reduce
      total += 3 * 3 * features * features + 2 * features  # 3x3
      total += features * out_channels + 2 * out_channels  # 1x1 expand
      if block == 0:  # projection on the skip (channels or stride change)
        total += in_channels * out_channels + 2 * out_channels
      in_channels = out_channels
  return total


def test_full_size_parameter_count():
  model = ResNet50(num_landmarks=68)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3))))
  backbone = _resnet50_backbone_parameters()
  assert backbone == 23_508_032  # torchvision's resnet50 minus its 2048x1000 classifier
  assert _count(variables["params"]) == backbone + 2048 * 136 + 136 == 23_786_696


def _numpy_variables(model, images, seed=0):
  """Random parameters without ``model.init``: compiling Flax's threefry initialisers for
  ~160 tensors costs ~15 s on CPU, the network itself well under a second."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
    lambda s: jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype), shapes["params"]
  )
  batch_stats = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes["batch_stats"])
  return {"params": params, "batch_stats": batch_stats}


def test_small_network_regresses_coordinates_and_trains():
  model = ResNet50(num_landmarks=5, width_multiplier=0.0625)
  images = jax.random.uniform(jax.random.key(1), (2, 128, 128, 3))
  variables = _numpy_variables(model, images)

  @jax.jit
  def forward_and_grad(params):
    def loss(params):
      out, state = model.apply(
        {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
      )
      return jnp.sum(out**2), (out, state)

    return jax.grad(loss, has_aux=True)(params)

  grads, (coordinates, state) = forward_and_grad(variables["params"])
  assert coordinates.shape == (2, 5, 2) and coordinates.dtype == jnp.float32
  assert float(jnp.abs(grads["stem_conv"]["kernel"]).max()) > 0
  # Training mode moved the running statistics away from their start (all ones here).
  assert float(jnp.abs(state["batch_stats"]["stem_bn"]["mean"] - 1.0).max()) > 0


def test_last_stage_is_four_by_four_before_the_pool():
  model = ResNet50(num_landmarks=5, width_multiplier=0.125)
  images = jnp.zeros((1, 128, 128, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  _, captured = jax.eval_shape(
    lambda v: model.apply(v, images, capture_intermediates=True, mutable=["intermediates"]),
    variables,
  )
  last = captured["intermediates"]["stage4_block3"]["__call__"][0]
  assert last.shape == (1, 4, 4, 4 * 64)  # 4 * 512 * width


def test_bfloat16_compute_float32_parameters():
  model = ResNet50(num_landmarks=3, width_multiplier=0.0625, dtype=jnp.bfloat16)
  images = jnp.ones((1, 128, 128, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  assert {p.dtype for p in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
  assert jax.eval_shape(model.apply, variables, images).dtype == jnp.float32
  jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, images))(variables))
  assert "bf16[1,64,64,4]" in jaxpr  # the stem convolution's output


def test_wrong_input_size_is_named():
  with pytest.raises(ValueError, match="divisible by 128"):
    ResNet50().init(jax.random.key(0), jnp.zeros((1, 96, 96, 3)))

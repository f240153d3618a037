"""The One Euro filter against the paper's formulas (Casiez et al., CHI 2012): values worked by
hand, and the closed forms of a first-order low-pass filter on noise and on a ramp."""

import math

import numpy as np
import pytest

from msm_jax.inference import smoothing


def test_the_first_steps_equal_the_papers_formulas_worked_by_hand():
  # min_cutoff 1 Hz, beta 0.5, d_cutoff 1 Hz; samples x = 0 (t = 0), 1 (t = 0.1), 1 (t = 0.3).
  parameters = smoothing.OneEuroParameters(min_cutoff=1.0, beta=0.5, derivative_cutoff=1.0)
  state = smoothing.start([[0.0]], 0.0)
  assert state.value[0, 0] == 0.0  # the first sample passes through
  # T_e = 0.1: dx = (1 - 0) / 0.1 = 10; alpha_d = 1 / (1 + (1 / 2 pi) / 0.1) = 0.3858695;
  # dx_hat = 3.858695; f_c = 1 + 0.5 x 3.858695 = 2.929348;
  # alpha = 1 / (1 + (1 / (2 pi 2.929348)) / 0.1) = 0.6479572 = x_hat.
  state = smoothing.step(state, [[1.0]], 0.1, parameters)
  assert state.derivative[0, 0] == pytest.approx(3.8586955, abs=1e-6)
  assert state.value[0, 0] == pytest.approx(0.6479572, abs=1e-6)
  # T_e = 0.2: dx = (1 - 0.6479572) / 0.2 = 1.760214; alpha_d = 1 / (1 + 0.1591549 / 0.2)
  # = 0.5568627; dx_hat = 0.5568627 x 1.760214 + 0.4431373 x 3.858695 = 2.690129;
  # f_c = 2.345065; alpha = 0.7466363; x_hat = 0.7466363 + 0.2533637 x 0.6479572 = 0.9108051.
  state = smoothing.step(state, [[1.0]], 0.3, parameters)
  assert state.derivative[0, 0] == pytest.approx(2.690129, abs=1e-6)
  assert state.value[0, 0] == pytest.approx(0.9108051, abs=1e-6)


def test_white_noise_shrinks_as_a_first_order_filter_says():
  # beta 0: a fixed first-order filter y = (1 - a) y' + a x. On white noise of variance s^2,
  # var(y) = a s^2 / (2 - a) and lag-one correlation 1 - a, so frame-to-frame differences
  # have variance 2 a^2 s^2 / (2 - a) against the input's 2 s^2: a ratio a / sqrt(2 - a).
  rate, cutoff = 30.0, 1.0
  alpha = smoothing.smoothing_factor(cutoff, 1 / rate)
  parameters = smoothing.OneEuroParameters(min_cutoff=cutoff, beta=0.0)
  rng = np.random.default_rng(0)
  noise = rng.normal(0, 1.0, (3000, 50, 2))
  state = smoothing.start(noise[0], 0.0)
  outputs = []
  for index in range(1, len(noise)):
    state = smoothing.step(state, noise[index], index / rate, parameters)
    outputs.append(state.value)
  outputs = np.array(outputs[100:])  # past the start
  ratio = np.std(np.diff(outputs, axis=0)) / np.std(np.diff(noise[101:], axis=0))
  # 2900 x 100 differences: the sample ratio is within ~1 % (3 standard errors) of its law.
  assert ratio == pytest.approx(alpha / math.sqrt(2 - alpha), rel=0.03)


def test_a_ramp_lags_by_the_steady_state_of_the_papers_equations():
  # x = v t sampled every T: in the steady state the lag e = x - x_hat is constant, so
  # e = (1 - a)(e + v T) gives e = (1 - a) v T / a; the raw derivative (x - x_hat') / T is
  # v / a, which the derivative filter passes unchanged, and a = alpha(min_cutoff + beta v / a):
  # a fixed point, solved here by iteration.
  rate, speed = 30.0, 2.0
  parameters = smoothing.OneEuroParameters(min_cutoff=1.0, beta=0.7)
  period = 1 / rate
  alpha = 0.5
  for _ in range(200):
    alpha = smoothing.smoothing_factor(
      parameters.min_cutoff + parameters.beta * speed / alpha, period
    )
  expected_lag = (1 - alpha) * speed * period / alpha
  state = smoothing.start([[0.0, 0.0]], 0.0)
  for index in range(1, 600):
    time = index * period
    state = smoothing.step(state, [[speed * time, 0.0]], time, parameters)
  assert speed * time - state.value[0, 0] == pytest.approx(expected_lag, rel=1e-6)
  assert expected_lag < speed / (2 * math.pi * parameters.beta * speed)  # the docstring's bound


def test_scale_rotation_and_cutoff_scale():
  rng = np.random.default_rng(1)
  path = np.cumsum(rng.normal(0, 1.0, (20, 5, 2)), axis=0)
  times = np.arange(20) / 30
  parameters = smoothing.OneEuroParameters(min_cutoff=1.5, beta=2.0)

  def run(points, scale=1.0, cutoff_scale=1.0, parameters=parameters):
    state = smoothing.start(points[0], times[0])
    for sample, time in zip(points[1:], times[1:]):
      state = smoothing.step(state, sample, time, parameters, scale, cutoff_scale)
    return state.value

  reference = run(path)
  # A face 3 times larger, with speeds counted in its own size: the same filter, scaled.
  np.testing.assert_allclose(run(3 * path, scale=3.0), 3 * reference, rtol=1e-12)
  # The image turned: each point's cutoff depends on its speed, not its direction.
  angle = 0.7
  turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  np.testing.assert_allclose(run(path @ turn.T), reference @ turn.T, atol=1e-12)
  # A cutoff scale c is min_cutoff and beta both times c, point by point.
  scales = np.array([1.0, 0.5, 1.0, 0.25, 1.0])
  scaled = run(path, cutoff_scale=scales)
  for point, factor in enumerate(scales):
    alone = smoothing.OneEuroParameters(min_cutoff=1.5 * factor, beta=2.0 * factor)
    np.testing.assert_allclose(scaled[point], run(path, parameters=alone)[point], rtol=1e-12)


def test_a_constant_stays_and_bad_input_is_refused():
  parameters = smoothing.OneEuroParameters()
  state = smoothing.start([[3.0, -2.0]], 0.0)
  for index in range(1, 5):
    state = smoothing.step(state, [[3.0, -2.0]], index / 30, parameters)
  np.testing.assert_array_equal(state.value, [[3.0, -2.0]])
  with pytest.raises(ValueError, match="does not follow"):
    smoothing.step(state, [[3.0, -2.0]], 0.1, parameters)
  with pytest.raises(ValueError, match="points"):
    smoothing.step(state, [[3.0, -2.0, 1.0]], 1.0, parameters)
  for bad in (dict(min_cutoff=0.0), dict(derivative_cutoff=float("nan")), dict(beta=-0.1)):
    with pytest.raises(ValueError, match="One Euro"):
      smoothing.OneEuroParameters(**bad)

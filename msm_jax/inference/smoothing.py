"""Landmark smoothing for video: the One Euro filter (Casiez, Roussel and Vogel, CHI 2012).

A first-order low-pass filter whose cutoff rises with the signal's speed: a still face gets a
low cutoff (jitter removed), a moving one a high cutoff (little lag). For a signal x sampled
at times t, with T_e = t - t_prev and the smoothing factor of a cutoff f_c

    alpha(f_c) = 1 / (1 + tau / T_e),   tau = 1 / (2 pi f_c)

each sample does (the paper's Algorithm, section "Algorithm")

    dx      = (x - x_hat_prev) / T_e                      the raw derivative
    dx_hat  = alpha(d_cutoff) dx + (1 - alpha(d_cutoff)) dx_hat_prev
    f_c     = min_cutoff + beta |dx_hat|
    x_hat   = alpha(f_c) x + (1 - alpha(f_c)) x_hat_prev

and the first sample passes through (x_hat = x, dx_hat = 0). Here a sample is a set of points
[..., D]: each point's derivative is a D-vector, filtered as such, and its length sets that
point's cutoff, so x and y of a landmark share one cutoff and turning the image changes
nothing. Speeds are divided by a ``scale`` (the face's size in pixels, `Tracker`), so
``beta`` is in seconds per face size and the same parameters fit a small and a large face.

Why these defaults: ``min_cutoff`` 1 Hz and ``derivative_cutoff`` 1 Hz are the paper's
starting values. Under a constant speed v (face sizes per second) a first-order filter lags by
tau = 1 / (2 pi f_c), that is v / (2 pi (min_cutoff + beta v)) < 1 / (2 pi beta) face sizes;
beta = 20 bounds it by 0.8 % of the face (about 2 % of the inter-ocular distance). The tracker
filters in the face's own frame (`tracking.stabilised_smoothing`), where v is how fast the
expression changes, not the head: a moving head is not delayed at all. Where nothing moves
(v ~ 0) the cutoff stays near min_cutoff: at 30 frames/s alpha = 0.17, and frame-to-frame noise
shrinks to alpha / sqrt(2 - alpha) = 0.13 of itself.

``cutoff_scale`` (per point) multiplies the cutoff: the tracker gives landmarks flagged
unreliable a smaller one, so that they lean on the previous frames more than on a measurement
that is the shape repair's guess.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class OneEuroParameters:
  """min_cutoff, derivative_cutoff: Hz; beta: seconds per face size (see the module
  docstring); unreliable_cutoff_scale: the cutoff factor of landmarks flagged unreliable."""

  min_cutoff: float = 1.0
  beta: float = 20.0
  derivative_cutoff: float = 1.0
  unreliable_cutoff_scale: float = 0.5

  def __post_init__(self):
    for name in ("min_cutoff", "derivative_cutoff", "unreliable_cutoff_scale"):
      value = getattr(self, name)
      if not (math.isfinite(value) and value > 0):
        raise ValueError(f"One Euro {name} must be a finite number > 0, got {value}")
    if not (math.isfinite(self.beta) and self.beta >= 0):
      raise ValueError(f"One Euro beta must be a finite number >= 0, got {self.beta}")


@dataclasses.dataclass(frozen=True)
class OneEuroState:
  """value: [..., D] the filtered points; derivative: [..., D] the filtered derivative (points
  per second); time: seconds of the last sample."""

  value: np.ndarray
  derivative: np.ndarray
  time: float


def smoothing_factor(cutoff, elapsed: float):
  """alpha = 1 / (1 + tau / T_e) with tau = 1 / (2 pi cutoff): the weight of the new sample
  in a first-order low-pass filter of this cutoff (Hz) sampled ``elapsed`` seconds apart."""
  tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, np.float64))
  return 1.0 / (1.0 + tau / elapsed)


def start(points, time: float) -> OneEuroState:
  """The state after the first sample, which passes through unchanged."""
  points = np.asarray(points, np.float64)
  return OneEuroState(points, np.zeros_like(points), float(time))


def step(
  state: OneEuroState,
  points,
  time: float,
  parameters: OneEuroParameters,
  scale=1.0,
  cutoff_scale=1.0,
) -> OneEuroState:
  """One sample through the filter; the new state's ``value`` is the filtered points.

  Args:
    state: from `start` or a previous `step`.
    points: [..., D] the new sample, as state.value.
    time: its time in seconds, after state.time.
    parameters: the filter's constants.
    scale: the unit of speed, broadcast to points.shape[:-1] (pixels per face size).
    cutoff_scale: a factor on each point's cutoff, broadcast to points.shape[:-1].
  """
  points = np.asarray(points, np.float64)
  if points.shape != state.value.shape:
    raise ValueError(f"One Euro: points {points.shape} after {state.value.shape}")
  elapsed = float(time) - state.time
  if not elapsed > 0:
    raise ValueError(f"One Euro: time {time} s does not follow {state.time} s")
  raw_derivative = (points - state.value) / elapsed
  derivative_alpha = smoothing_factor(parameters.derivative_cutoff, elapsed)
  derivative = derivative_alpha * raw_derivative + (1 - derivative_alpha) * state.derivative
  speed = np.linalg.norm(derivative, axis=-1) / np.asarray(scale, np.float64)
  cutoff = (parameters.min_cutoff + parameters.beta * speed) * np.asarray(cutoff_scale, np.float64)
  alpha = smoothing_factor(cutoff, elapsed)[..., None]
  return OneEuroState(alpha * points + (1 - alpha) * state.value, derivative, float(time))

"""Evaluation metrics of Sec. IV-B: NME (Eq. 12), failure rate, CED curve and AUC.

The paper calls the NME "NRMSE"; it is the mean over landmarks of the Euclidean
error, divided by a per-face normaliser d_i (Eq. 12):

    nme_i = (1 / L) * sum_j ||P_ij - G_ij||_2 / d_i

with d_i the distance between the ground-truth outer eye corners
("inter-ocular"), between the ground-truth pupils / eye centres ("inter-pupil"),
or sqrt(w * h) of a face box ("box", the AFLW-style normaliser). Eq. 12's
dataset NME is the mean of the per-face values returned by :func:`nme`.

Thresholds, as in the paper: failure at 0.08 for 300-W and COFW, 0.1 for WFLW,
and a face *fails* when its NME is **greater than or equal to** the threshold
("an NRMSE of 0.08 or greater is considered a failure", Sec. IV-B). HRNet-facial
and PIPNet count ``nme > threshold``; the two only differ for NMEs exactly at the
threshold.

AUC is the area under the cumulative error distribution (CED) on
[0, threshold], divided by the threshold. The CED is a step function of the
sorted errors, so the area is computed in closed form, exactly; the common
"np.trapz on a 0.0001 grid" implementations approximate the same number.

Evaluation runs on the host: inputs may be numpy or jax arrays, outputs are
numpy float64.
"""

from __future__ import annotations

import numpy as np

from msm_jax.core import landmarks

NORMALISERS = ("inter_ocular", "inter_pupil", "box")


def _float_array(values, name: str, ndim: int) -> np.ndarray:
  array = np.asarray(values, dtype=np.float64)
  if array.ndim != ndim:
    raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
  if not np.all(np.isfinite(array)):
    raise ValueError(f"{name} contains NaN or infinite values")
  return array


def normalising_distance(gt, scheme, norm: str = "inter_ocular", boxes=None) -> np.ndarray:
  """The per-face normaliser d_i of Eq. 12.

  Args:
    gt: [N, L, 2] ground-truth landmarks (x, y), pixels.
    scheme: a LandmarkScheme, or anything ``landmarks.get_scheme`` accepts.
    norm: "inter_ocular" (outer eye corners), "inter_pupil" (pupils / eye
      centres) or "box" (sqrt(w * h) of ``boxes``).
    boxes: [N, 4] (x0, y0, x1, y1) face boxes in the landmarks' pixel
      coordinates, w = x1 - x0 and h = y1 - y0; only for norm="box".

  Returns:
    [N] float64 distances, all > 0.

  Raises:
    ValueError: unknown norm, missing or misshapen boxes, or a zero normaliser.
  """
  scheme = landmarks.get_scheme(scheme)
  gt = _float_array(gt, "gt", ndim=3)
  if norm == "inter_ocular":
    left, right = np.moveaxis(landmarks.outer_eye_corners(gt, scheme), -2, 0)
    distances = np.linalg.norm(right - left, axis=-1)
  elif norm == "inter_pupil":
    left, right = np.moveaxis(landmarks.pupils(gt, scheme), -2, 0)
    distances = np.linalg.norm(right - left, axis=-1)
  elif norm == "box":
    if boxes is None:
      raise ValueError('norm="box" needs boxes [N, 4] (x0, y0, x1, y1)')
    boxes = _float_array(boxes, "boxes", ndim=2)
    if boxes.shape != (gt.shape[0], 4):
      raise ValueError(f"boxes must be [N, 4] = [{gt.shape[0]}, 4], got {boxes.shape}")
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if np.any(widths <= 0) or np.any(heights <= 0):
      bad = np.flatnonzero((widths <= 0) | (heights <= 0))
      raise ValueError(
        f"boxes of faces {bad.tolist()} have a non-positive width "
        "or height (expected x0 < x1 and y0 < y1)"
      )
    distances = np.sqrt(widths * heights)
  else:
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMALISERS}")
  if np.any(distances <= 0):
    bad = np.flatnonzero(distances <= 0)
    raise ValueError(
      f"{norm} normaliser is zero for faces {bad.tolist()} (their "
      "ground-truth reference points coincide)"
    )
  return distances


def nme(pred, gt, scheme, norm: str = "inter_ocular", boxes=None, mask=None) -> np.ndarray:
  """Per-face normalised mean error (the summand of Eq. 12).

  Args:
    pred: [N, L, 2] predicted landmarks (x, y), pixels.
    gt: [N, L, 2] ground-truth landmarks, same coordinates.
    scheme: a LandmarkScheme, or anything ``landmarks.get_scheme`` accepts.
    norm: "inter_ocular", "inter_pupil" or "box" (see ``normalising_distance``).
    boxes: [N, 4] (x0, y0, x1, y1); only for norm="box".
    mask: optional [N, L] bool; average only over the landmarks where it is
      True (e.g. the occluded ones). The normaliser is unchanged. A face with no
      selected landmark gets NaN: average such results with ``np.nanmean``.

  Returns:
    [N] float64 NME of each face (a fraction of d_i, not a percentage).

  Raises:
    ValueError: mismatched shapes, unknown norm, non-finite inputs, or a zero
      normaliser.
  """
  scheme = landmarks.get_scheme(scheme)
  pred = _float_array(pred, "pred", ndim=3)
  gt = _float_array(gt, "gt", ndim=3)
  expected = (gt.shape[0], scheme.num_points, 2)
  if gt.shape != expected or pred.shape != gt.shape:
    raise ValueError(
      f"pred and gt must both be [N, L, 2] = {list(expected)} for "
      f"the {scheme.name!r} scheme; got pred {pred.shape}, gt "
      f"{gt.shape}"
    )
  distances = normalising_distance(gt, scheme, norm, boxes)
  errors = np.linalg.norm(pred - gt, axis=-1) / distances[:, None]
  if mask is None:
    return errors.mean(axis=-1)
  mask = np.asarray(mask)
  if mask.shape != errors.shape:
    raise ValueError(f"mask must be [N, L] = {list(errors.shape)}, got {list(mask.shape)}")
  mask = mask.astype(bool)
  counts = mask.sum(axis=-1)
  sums = np.where(mask, errors, 0.0).sum(axis=-1)
  return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _check_nmes_and_threshold(nmes, threshold) -> np.ndarray:
  nmes = _float_array(nmes, "nmes", ndim=1)
  if nmes.size == 0:
    raise ValueError("nmes is empty")
  if np.any(nmes < 0):
    raise ValueError("nmes must be non-negative")
  if not np.isfinite(threshold) or threshold <= 0:
    raise ValueError(f"threshold must be a positive number, got {threshold!r}")
  return nmes


def failure_rate(nmes, threshold: float) -> float:
  """Fraction of faces whose NME is >= threshold (Sec. IV-B).

  Args:
    nmes: [N] per-face NMEs (fractions, e.g. from :func:`nme`).
    threshold: 0.08 for 300-W / COFW, 0.1 for WFLW in the paper.

  Returns:
    The failure rate in [0, 1] (the paper's tables show it x 100).
  """
  nmes = _check_nmes_and_threshold(nmes, threshold)
  return float(np.mean(nmes >= threshold))


def auc(nmes, threshold: float) -> float:
  """Area under the CED curve on [0, threshold], divided by threshold.

  CED(e) = fraction of faces with NME <= e is a sum of unit steps, one per face,
  each 1/N high and starting at nme_i; a step starting at nme_i covers
  max(0, threshold - nme_i) of [0, threshold]. Hence, exactly,

      AUC = (1 / N) * sum_i max(0, 1 - nme_i / threshold).

  Args:
    nmes: [N] per-face NMEs.
    threshold: upper end of the integration (the failure threshold).

  Returns:
    AUC in [0, 1]: 1 when every NME is 0, 0 when every face fails.
  """
  nmes = _check_nmes_and_threshold(nmes, threshold)
  return float(np.mean(np.clip(1.0 - nmes / threshold, 0.0, 1.0)))


def ced_curve(nmes, threshold: float, num_points: int = 1001) -> tuple[np.ndarray, np.ndarray]:
  """Cumulative error distribution sampled for plotting (Fig. 9, 11, 13).

  Args:
    nmes: [N] per-face NMEs.
    threshold: right end of the x axis.
    num_points: number of samples, >= 2.

  Returns:
    (x, y): [num_points] float64 each; x evenly spaced on [0, threshold] and
    y[k] the fraction of faces with NME <= x[k].
  """
  nmes = _check_nmes_and_threshold(nmes, threshold)
  if int(num_points) < 2:
    raise ValueError(f"num_points must be >= 2, got {num_points}")
  x = np.linspace(0.0, threshold, int(num_points))
  y = np.searchsorted(np.sort(nmes), x, side="right") / nmes.size
  return x, y

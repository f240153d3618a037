"""From predicted landmarks to the numbers of the paper's tables (Sec. IV-B, IV-G).

The inference pipeline (Algorithm 2) hands over arrays; this module turns one
evaluation subset's arrays into a flat dict of metrics, the unit every table of
``msm_jax.eval.reports`` is built from:

* the NME of Eq. 12 for each normaliser (inter-ocular, inter-pupil, box), the
  failure rate and the CED's AUC at the paper's threshold (Tables III-VIII);
* on data with ground-truth occlusion flags (COFW, synthetic occluders), the NME
  restricted to the occluded and to the visible landmarks, and how well the
  model's Eq. 9 reliability mask finds the occluded points;
* the threshold sweep of Table IX (reliability thresholds K, Sec. IV-G), which
  reruns only the shape reconstruction through a caller-supplied callable;
* the "mean shape" baseline row: the mean training shape placed in each test
  face's crop, a floor that shows the scale of the other numbers.

Conventions of the metric dicts (all values plain Python numbers or strings, so
``json.dumps`` takes them): NMEs and failure rates are **percentages** (as the
paper prints them), AUC, precision, recall and F1 are **fractions** in [0, 1]
(the paper prints AUC as 0.5262). A value that is undefined on the data (e.g.
the NME of occluded points when nothing is occluded) is ``nan``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import numpy as np

from msm_jax.core import geometry, landmarks, metrics

# Table IX's grid of (contour K, facial-feature K), Sec. IV-G.
TABLE_IX_THRESHOLD_PAIRS = tuple(
  (contour, feature) for contour in (0.3, 0.4, 0.5) for feature in (0.4, 0.5, 0.6, 0.7)
)


@dataclasses.dataclass(frozen=True, eq=False)
class SubsetPredictions:
  """One evaluation subset's predictions and ground truth, all on the host.

  Attributes:
    name: subset name ("common", "challenge", "full", "private", "test", "pose", ...).
    pred: [N, L, 2] float64 predicted landmarks (x, y), image pixels.
    gt: [N, L, 2] float64 ground-truth landmarks, same coordinates.
    occluded: optional [N, L] bool ground-truth occlusion flags (True = occluded).
    reliable: optional [N, L] bool, the model's reliability mask (Eq. 9 score
      > K): True where the hourglass landmark was kept.
    scores: optional [N, L] float64 Eq. 9 scores.
    boxes: optional [N, 4] float64 (x0, y0, x1, y1) face boxes, for norm="box".
  """

  name: str
  pred: np.ndarray
  gt: np.ndarray
  occluded: np.ndarray | None = None
  reliable: np.ndarray | None = None
  scores: np.ndarray | None = None
  boxes: np.ndarray | None = None

  def __post_init__(self):
    # Arrays are converted and checked once here, so every metric below can
    # trust the shapes; the error names the subset and the field.
    where = f"SubsetPredictions {self.name!r}"
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f"SubsetPredictions: name must be a non-empty string, got {self.name!r}")
    pred = np.asarray(self.pred, dtype=np.float64)
    gt = np.asarray(self.gt, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[-1] != 2 or gt.shape[0] == 0:
      raise ValueError(f"{where}: gt must be [N, L, 2] with N >= 1, got {gt.shape}")
    if pred.shape != gt.shape:
      raise ValueError(f"{where}: pred must have gt's shape {gt.shape}, got {pred.shape}")
    object.__setattr__(self, "pred", pred)
    object.__setattr__(self, "gt", gt)
    per_landmark = gt.shape[:2]
    for field in ("occluded", "reliable"):
      value = getattr(self, field)
      if value is None:
        continue
      value = np.asarray(value)
      if value.shape != per_landmark:
        raise ValueError(
          f"{where}: {field} must be [N, L] = {list(per_landmark)}, got {list(value.shape)}"
        )
      if value.dtype != bool and not np.isin(value, (0, 1)).all():
        raise ValueError(f"{where}: {field} must be boolean (or 0/1) flags")
      object.__setattr__(self, field, value.astype(bool))
    if self.scores is not None:
      scores = np.asarray(self.scores, dtype=np.float64)
      if scores.shape != per_landmark:
        raise ValueError(
          f"{where}: scores must be [N, L] = {list(per_landmark)}, got {list(scores.shape)}"
        )
      object.__setattr__(self, "scores", scores)
    if self.boxes is not None:
      boxes = np.asarray(self.boxes, dtype=np.float64)
      if boxes.shape != (gt.shape[0], 4):
        raise ValueError(
          f"{where}: boxes must be [N, 4] = [{gt.shape[0]}, 4], got {list(boxes.shape)}"
        )
      object.__setattr__(self, "boxes", boxes)

  @property
  def count(self) -> int:
    """N, the number of faces."""
    return int(self.gt.shape[0])


def subset_nmes(
  subset: SubsetPredictions, scheme, norm: str = "inter_ocular", mask=None
) -> np.ndarray:
  """Per-face NME (fractions, Eq. 12) of a subset: the input of CED curves.

  Args:
    subset: the predictions.
    scheme: a LandmarkScheme or a name ``landmarks.get_scheme`` accepts.
    norm: "inter_ocular", "inter_pupil" or "box" (uses ``subset.boxes``).
    mask: optional [N, L] bool, average over the selected landmarks only.

  Returns:
    [N] float64; NaN for faces with no selected landmark.
  """
  return metrics.nme(subset.pred, subset.gt, scheme, norm, boxes=subset.boxes, mask=mask)


def _finite_mean(values: np.ndarray) -> float:
  """Mean over the finite entries; NaN (without numpy's warning) if there are none."""
  finite = values[np.isfinite(values)]
  return float(finite.mean()) if finite.size else float("nan")


def _ratio(numerator: int, denominator: int) -> float:
  return numerator / denominator if denominator else float("nan")


def unreliable_as_occlusion_detector(occluded, reliable) -> dict:
  """Precision / recall of "not reliable" as a detector of "occluded".

  Micro-averaged: every landmark of every face is one binary decision, so
  TP = #(unreliable & occluded), FP = #(unreliable & visible),
  FN = #(reliable & occluded); precision = TP / (TP + FP), recall =
  TP / (TP + FN), F1 = 2 P R / (P + R). An undefined ratio (nothing flagged,
  nothing occluded) is NaN rather than scikit-learn's warning-and-0; so is the
  precision where nothing is occluded.

  Args:
    occluded: [N, L] bool ground-truth occlusion flags.
    reliable: [N, L] bool reliability mask (Eq. 9 score > K).

  Returns:
    {"unreliable_precision", "unreliable_recall", "unreliable_f1": fractions,
     "unreliable_true_positives", "unreliable_false_positives",
     "unreliable_false_negatives": ints}.
  """
  occluded = np.asarray(occluded, dtype=bool)
  unreliable = ~np.asarray(reliable, dtype=bool)
  if occluded.shape != unreliable.shape:
    raise ValueError(
      f"occluded {occluded.shape} and reliable {unreliable.shape} must have the same shape"
    )
  true_positives = int(np.sum(unreliable & occluded))
  false_positives = int(np.sum(unreliable & ~occluded))
  false_negatives = int(np.sum(~unreliable & occluded))
  # On faces with nothing occluded there is nothing to detect: no precision either (a 0
  # would read as every flag being wrong about an occluder).
  flagged = true_positives + false_positives if occluded.any() else 0
  precision = _ratio(true_positives, flagged)
  recall = _ratio(true_positives, true_positives + false_negatives)
  f1 = (
    2 * precision * recall / (precision + recall)
    if np.isfinite(precision) and np.isfinite(recall) and precision + recall > 0
    else float("nan")
  )
  return {
    "unreliable_precision": precision,
    "unreliable_recall": recall,
    "unreliable_f1": f1,
    "unreliable_true_positives": true_positives,
    "unreliable_false_positives": false_positives,
    "unreliable_false_negatives": false_negatives,
  }


def subset_metrics(
  subset: SubsetPredictions,
  scheme,
  norms: Iterable[str] = ("inter_ocular", "inter_pupil"),
  failure_threshold: float = 0.08,
  failure_norm: str = "inter_ocular",
) -> dict:
  """The numbers of one subset for the paper's tables (Sec. IV-B).

  Args:
    subset: the predictions (and optional occlusion / reliability flags).
    scheme: a LandmarkScheme or a name ``landmarks.get_scheme`` accepts.
    norms: normalisers to report the NME with.
    failure_threshold: 0.08 for 300-W and COFW, 0.1 for WFLW (Sec. IV-B).
    failure_norm: the NME that failure rate and AUC are computed from; the
      paper uses inter-ocular.

  Returns:
    A flat dict: "count"; "nme_<norm>" (%) for each norm; "failure_rate" (%,
    NME >= threshold), "auc" (fraction), "failure_threshold", "failure_norm".
    With ``subset.occluded``: "nme_occluded_<norm>" and "nme_visible_<norm>" (%,
    per-face masked NME averaged over the faces that have such landmarks),
    "occluded_fraction" (of all landmarks). With ``subset.scores`` too:
    "mean_score_occluded", "mean_score_visible". With ``subset.reliable``
    too: the keys of :func:`unreliable_as_occlusion_detector`.
  """
  scheme = landmarks.get_scheme(scheme)
  norms = tuple(norms)
  if not norms:
    raise ValueError("subset_metrics: norms is empty")
  results = {"count": subset.count}
  for norm in norms:
    results[f"nme_{norm}"] = float(100.0 * subset_nmes(subset, scheme, norm).mean())
  failure_nmes = subset_nmes(subset, scheme, failure_norm)
  results["failure_rate"] = 100.0 * metrics.failure_rate(failure_nmes, failure_threshold)
  results["auc"] = metrics.auc(failure_nmes, failure_threshold)
  results["failure_threshold"] = float(failure_threshold)
  results["failure_norm"] = failure_norm
  if subset.occluded is None:
    return results
  occluded = subset.occluded
  for norm in norms:
    results[f"nme_occluded_{norm}"] = 100.0 * _finite_mean(
      subset_nmes(subset, scheme, norm, mask=occluded)
    )
    results[f"nme_visible_{norm}"] = 100.0 * _finite_mean(
      subset_nmes(subset, scheme, norm, mask=~occluded)
    )
  results["occluded_fraction"] = float(occluded.mean())
  if subset.scores is not None:
    results["mean_score_occluded"] = _finite_mean(subset.scores[occluded])
    results["mean_score_visible"] = _finite_mean(subset.scores[~occluded])
  if subset.reliable is not None:
    results.update(unreliable_as_occlusion_detector(occluded, subset.reliable))
  return results


def threshold_pair_label(contour_threshold: float, feature_threshold: float) -> str:
  """Row name of Table IX: "0.4 / 0.6" (contour K / facial-feature K)."""
  return f"{contour_threshold:g} / {feature_threshold:g}"


def threshold_sweep(
  predict_with_thresholds: Callable[[float, float], SubsetPredictions],
  scheme,
  pairs: Iterable[tuple[float, float]] = TABLE_IX_THRESHOLD_PAIRS,
  norms: Iterable[str] = ("inter_pupil", "inter_ocular"),
  failure_threshold: float = 0.08,
) -> dict[str, dict[str, dict]]:
  """Table IX: metrics for each (contour K, facial-feature K) pair (Sec. IV-G).

  The caller keeps the hourglass outputs and reruns only the shape
  reconstruction for each pair, e.g. with thresholds from
  ``landmarks.region_thresholds(scheme, contour, feature)``.

  Args:
    predict_with_thresholds: ``(contour_K, feature_K) -> SubsetPredictions``.
    scheme: a LandmarkScheme or a name ``landmarks.get_scheme`` accepts.
    pairs: the (contour, feature) grid; the paper's 3 x 4 grid by default.
    norms, failure_threshold: as in :func:`subset_metrics`. Table IX's MSM value
      at (0.4, 0.6), 5.50, equals Table V's *inter-pupil* NME, so inter-pupil
      comes first.

  Returns:
    {threshold_pair_label(c, f): {subset.name: subset_metrics(...)}}, in the order
    of ``pairs``: the ``rows`` argument of ``reports.threshold_table``.
  """
  sweep = {}
  for contour_threshold, feature_threshold in pairs:
    subset = predict_with_thresholds(contour_threshold, feature_threshold)
    if not isinstance(subset, SubsetPredictions):
      raise TypeError(
        f"threshold_sweep: predict_with_thresholds"
        f"({contour_threshold}, {feature_threshold}) returned "
        f"{type(subset).__name__}, expected SubsetPredictions"
      )
    label = threshold_pair_label(contour_threshold, feature_threshold)
    if label in sweep:
      raise ValueError(f"threshold_sweep: pair {label} is listed twice")
    sweep[label] = {subset.name: subset_metrics(subset, scheme, norms, failure_threshold)}
  return sweep


def mean_shape_baseline(
  train_landmarks_in_crop, train_crop_size: int, crop_to_image, test_crop_size: int | None = None
) -> np.ndarray:
  """The mean training shape placed in each test face's crop ("for scale" row).

  The training shapes are averaged in the normalised crop coordinates of Eq. 2
  (``u = (2 x + 1) / S - 1``), so crops of different sizes agree; the mean is
  then put in each test crop's pixel frame and mapped to image pixels.

  Args:
    train_landmarks_in_crop: [N_train, L, 2] training landmarks in crop pixels of
      a ``train_crop_size`` square crop (the hourglass's training targets).
    train_crop_size: S_train, side of the training crops in pixels.
    crop_to_image: [N_test, 3, 3] (or [N_test, 2, 3]) pixel matrices, test crop
      pixel -> image pixel; for box crops
      ``geometry.invert_affine(geometry.crop_matrix(boxes, S_test))``.
    test_crop_size: S_test; defaults to ``train_crop_size``.

  Returns:
    [N_test, L, 2] float64 predicted landmarks in image pixels.
  """
  train = np.asarray(train_landmarks_in_crop, dtype=np.float64)
  if train.ndim != 3 or train.shape[-1] != 2 or train.shape[0] == 0:
    raise ValueError(
      f"mean_shape_baseline: train_landmarks_in_crop must be "
      f"[N, L, 2] with N >= 1, got {train.shape}"
    )
  if not np.all(np.isfinite(train)):
    raise ValueError("mean_shape_baseline: train_landmarks_in_crop contains NaN or infinite values")
  matrices = np.asarray(crop_to_image, dtype=np.float64)
  if matrices.ndim != 3 or matrices.shape[1:] not in ((3, 3), (2, 3)):
    raise ValueError(
      f"mean_shape_baseline: crop_to_image must be [N, 3, 3] or [N, 2, 3], got {matrices.shape}"
    )
  test_crop_size = train_crop_size if test_crop_size is None else test_crop_size
  to_normalised = geometry.pixel_to_normalised_matrix(train_crop_size, train_crop_size)
  to_test_pixels = geometry.normalised_to_pixel_matrix(test_crop_size, test_crop_size)
  mean_normalised = geometry.apply_affine(train, to_normalised).mean(axis=0)
  mean_in_test_crop = geometry.apply_affine(mean_normalised, to_test_pixels)
  return geometry.apply_affine(
    np.broadcast_to(mean_in_test_crop, (matrices.shape[0],) + mean_in_test_crop.shape), matrices
  )

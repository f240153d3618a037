"""Accuracy as a user of `predict.py` meets it: faces found by the detector, not given boxes.

`evaluate.py` crops every face from its ground-truth landmark box, as the paper's tables do.
A photo has no such box: `predict.py` finds the face with OpenCV's Haar cascade and maps that
box to the training crop convention (`detection.calibrated_face_box`). This module runs the
shipped package both ways on the same faces, so the cost of real detection is a number:

  python -m msm_jax.eval.detector_accuracy --model pretrained \
      --config configs/300w_subset.py --config.data.root=../shared/data/300w_subset

Each ground-truth face is matched to at most one detection (IoU of the detector's calibrated
box with the landmark box >= 0.3); unmatched faces count as "not detected" and are left out
of the detector NME (the same protocol as dlib's and other detector-dependent numbers).
"""

import collections

import numpy as np

from msm_jax import cli, files
from msm_jax.core import landmarks
from msm_jax.data import datasets, images
from msm_jax.data.records import box_from_landmarks
from msm_jax.eval import subset_metrics
from msm_jax.inference import detection, prediction, pretrained


def _metrics(pred, gt, scheme, failure_threshold) -> dict:
  subset = subset_metrics.SubsetPredictions(name="faces", pred=np.asarray(pred), gt=np.asarray(gt))
  return subset_metrics.subset_metrics(
    subset, scheme, norms=("inter_ocular",), failure_threshold=failure_threshold
  )


def evaluate_with_detector(
  model, records, failure_threshold: float = 0.08, batch_size: int = 8
) -> dict:
  """Metrics with ground-truth boxes and with detector boxes, on the same records.

  Args:
    model: a `pretrained.PretrainedModel`.
    records: `FaceRecord`s (landmarks in the stored pixel grid; images are read as stored,
      without EXIF rotation, so predictions and annotations share one grid).
    failure_threshold: of the inter-ocular NME (0.08 for 300-W).
  Returns:
    {"ground_truth_boxes": metrics over all faces, "detector_boxes": metrics over the
     detected faces, "detection_rate", "faces", "detected"}; metrics are those of
    `subset_metrics.subset_metrics` (NME in %, failure rate in %, AUC as a fraction).
  """
  scheme = landmarks.get_scheme(model.config.data.scheme)
  by_image = collections.defaultdict(list)
  for record in records:
    by_image[record.image_path if record.image is None else id(record)].append(record)
  groups = list(by_image.values())
  pixels = [images.record_image(group[0]) for group in groups]
  gt_boxes = [
    np.stack([box_from_landmarks(record.landmarks) for record in group]) for group in groups
  ]

  with_gt = prediction.predict_images(model, pixels, boxes=gt_boxes, batch_size=batch_size)
  with_detector = prediction.predict_images(model, pixels, batch_size=batch_size, errors="collect")
  gt_points, gt_preds, detected_points, detected_preds = [], [], [], []
  for group, boxes, given, found in zip(groups, gt_boxes, with_gt, with_detector):
    for record, face in zip(group, given.faces):
      gt_points.append(record.landmarks)
      gt_preds.append(face.landmarks)
    if not found.faces:
      continue
    detector_boxes = np.stack([face.box for face in found.faces])
    for face_index, record_index in detection.match_boxes(detector_boxes, boxes):
      detected_points.append(group[record_index].landmarks)
      detected_preds.append(found.faces[face_index].landmarks)

  results = {
    "faces": len(gt_points),
    "detected": len(detected_points),
    "detection_rate": len(detected_points) / max(1, len(gt_points)),
    "ground_truth_boxes": _metrics(gt_preds, gt_points, scheme, failure_threshold),
  }
  if detected_points:
    results["detector_boxes"] = _metrics(detected_preds, detected_points, scheme, failure_threshold)
  return results


def markdown(results: dict) -> str:
  rows = [
    "| faces cropped from | faces | inter-ocular NME % | FR % | AUC |",
    "|---|---:|---:|---:|---:|",
  ]
  for key, label in (
    ("ground_truth_boxes", "landmark box x 1.25"),
    ("detector_boxes", "Haar detector (calibrated)"),
  ):
    if key in results:
      row = results[key]
      rows.append(
        f"| {label} | {row['count']} | {row['nme_inter_ocular']:.2f} | "
        f"{row['failure_rate']:.2f} | {row['auc']:.4f} |"
      )
  rows.append(
    f"\nDetected {results['detected']} of {results['faces']} faces "
    f"({100 * results['detection_rate']:.1f} %)."
  )
  return "\n".join(rows)


def main(argv):
  del argv
  config = _CONFIG.value
  model = pretrained.load_pretrained(_MODEL.value)
  _, validation = datasets.split_records(config, datasets.read_training_records(config))
  if not validation:
    raise SystemExit(
      "the config carves no validation split (data.validation_fraction = 0 "
      "and no data.validation_list)"
    )
  results = evaluate_with_detector(model, validation, config.eval.failure_threshold)
  print(markdown(results))
  if _OUT.value:
    files.write_json(_OUT.value, results)


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags

  _CONFIG = config_flags.DEFINE_config_file("config", None, "the training config")
  _MODEL = flags.DEFINE_string("model", "pretrained", "pretrained package folder")
  _OUT = flags.DEFINE_string("out", "", "optional JSON output")
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=cli.parse_flags_help_exits_zero)

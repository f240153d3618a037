"""Fits a face detector's box calibration (`detection.DetectorCalibration`) on annotated
faces: detect on every photo, match each detection to a landmark box by IoU, and take the
median centre offset and side ratio (`detection.calibrate`). The package records it
(`python -m msm_jax.train.packaging --detector_calibration FILE`).

  python -m msm_jax.train.detector_calibration --config configs/300w_subset.py --out cal.json
"""

import argparse
import dataclasses
import json
import time

import numpy as np

from msm_jax import files
from msm_jax.cli import load_config_file
from msm_jax.data import datasets, w300
from msm_jax.data import images as image_io
from msm_jax.data.records import box_from_landmarks
from msm_jax.inference import detection


def calibrate_on_records(
  records, cascade: str = detection.DEFAULT_CASCADE, min_iou: float = detection.MATCH_MIN_IOU
) -> detection.DetectorCalibration:
  """Detect on every record's image (stored pixel grid: EXIF not applied, as annotated),
  match by IoU against the landmark boxes, and fit; detection rate and time in statistics."""
  haar, reference, unmatched_detections = [], [], 0
  start = time.perf_counter()
  for record in records:
    detections = detection.detect_faces(image_io.record_image(record), cascade)
    truth = box_from_landmarks(record.landmarks)[None]
    pairs = detection.match_boxes(detections, truth, min_iou)
    unmatched_detections += len(detections) - len(pairs)
    haar += [detections[d] for d, _ in pairs]
    reference += [truth[r] for _, r in pairs]
  seconds = time.perf_counter() - start
  if not haar:
    raise ValueError(f"calibrate_on_records: {cascade} matched none of {len(records)} faces")
  calibration = detection.calibrate(np.stack(haar), np.stack(reference), cascade)
  statistics = dict(
    calibration.statistics,
    faces=len(records),
    detection_rate=round(len(haar) / len(records), 4),
    other_detections=unmatched_detections,
    min_iou=min_iou,
    seconds_per_image=round(seconds / len(records), 4),
  )
  return dataclasses.replace(calibration, statistics=statistics)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Fit detector-box calibrations on 300-W data.")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--data_root", help="a 300-W folder (official layout)")
  source.add_argument("--config", help="a configs/<name>.py: its training faces (no validation)")
  parser.add_argument("--split", default="train", help="with --data_root")
  parser.add_argument(
    "--cascades",
    default=",".join(detection.CASCADES),
    help=f"comma list of detectors ({detection.DLIB_HOG} or Haar cascade files); the one with the "
    "higher detection rate is saved",
  )
  parser.add_argument("--out", required=True, help="JSON file for the calibration")
  args = parser.parse_args(argv)
  if args.config:
    config = load_config_file(args.config)
    records, _ = datasets.split_records(config, datasets.read_training_records(config))
  else:
    records = w300.read_300w(args.data_root, args.split)
  results = [calibrate_on_records(records, name) for name in args.cascades.split(",")]
  for result in results:
    print(json.dumps(result.to_dict()))
  best = max(results, key=lambda result: result.statistics["detection_rate"])
  files.write_json(args.out, best.to_dict())
  print(f"saved {best.cascade} calibration to {args.out}")


if __name__ == "__main__":
  main()

"""The landmark offset of a package: what a flip-trained network cannot learn of the
annotations' pixel convention.

Training mirrors half of the crops (`augment.flip_matrix`: x' = W - 1 - x, exact for pixel
centres). If a dataset's annotations sit a constant c pixels right of the pixel-centre
positions the images show, an upright crop teaches the network "+c" and its mirror "-c": it
learns 0 and predicts the image's position, c left of the annotation. The test-time flip
averages the two and cannot recover it either. Vertical conventions are not mirrored, so the
network learns them. What is left is a constant in image pixels, which the package adds to
its landmarks (`PipelineOptions.landmark_offset`), fitted here as the mean residual
(annotation - prediction) on landmark-box crops of the config's training faces.

On the 300-W faces (`configs/300w_subset.py`) the shipped network's residual is +0.53 pixel
in x and +0.03 in y, in image pixels whatever the face's size (per-face offsets against the
inter-ocular distance: slope 0.0006 px per pixel on training faces), and it changes sign
when the photos and their annotations are mirrored (the prediction's x offset -0.60 px as
given, +0.55 px mirrored, 201 held-out faces): it is in the annotations, not in the pipeline,
which would shift a mirrored photo the same way.

  python -m msm_jax.eval.annotation_offset --model pretrained \
      --config configs/300w_subset.py [--faces 300] [--dry-run]
"""

import dataclasses

import numpy as np

from msm_jax import cli
from msm_jax.data.images import record_image
from msm_jax.data.records import box_from_landmarks
from msm_jax.eval import robustness
from msm_jax.inference import pretrained
from msm_jax.train import packaging

DEFAULT_FACES = 300
_CHUNK = 32  # photos decoded at once


def mean_residual(predicted: np.ndarray, truth: np.ndarray) -> dict:
  """Mean (truth - predicted) over faces and landmarks, faces with a NaN prediction left out.

  predicted, truth: [F, L, 2]. Returns {"offset": [dx, dy], "standard_error": [sx, sy] (of
  the per-face means), "faces": faces used}.
  """
  predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
  if predicted.shape != truth.shape or predicted.ndim != 3 or predicted.shape[-1] != 2:
    raise ValueError(f"want two [F, L, 2] arrays, got {predicted.shape} and {truth.shape}")
  found = np.all(np.isfinite(predicted), axis=(1, 2))
  if not found.any():
    raise ValueError("no face has a prediction: nothing to fit the offset on")
  per_face = (truth[found] - predicted[found]).mean(axis=1)  # [F, 2]
  spread = per_face.std(axis=0, ddof=1) if len(per_face) > 1 else np.full(2, np.nan)
  return {
    "offset": per_face.mean(axis=0).tolist(),
    "standard_error": (spread / np.sqrt(len(per_face))).tolist(),
    "faces": int(found.sum()),
  }


def predict_from_landmark_boxes(model, records, batch_size: int = 8) -> np.ndarray:
  """The package's landmarks [F, L, 2] (its own offset left out; NaN where it failed) on the
  records' photos, each cropped from its annotation's landmark box."""

  options = dataclasses.replace(model.options, landmark_offset=(0.0, 0.0))
  model = dataclasses.replace(model, options=options)
  predicted = []
  for start in range(0, len(records), _CHUNK):
    faces = []
    for record in records[start : start + _CHUNK]:
      points = np.asarray(record.landmarks, np.float32)
      faces.append(robustness.Face(record_image(record), box_from_landmarks(points), points))
    predicted.append(robustness.run_condition(model, faces, batch_size)["predicted"])
  return np.concatenate(predicted).astype(np.float64)


def fit(model, records, batch_size: int = 8) -> dict:
  """`mean_residual` of the package (offset left out) on the records' landmark boxes."""
  if not records:
    raise ValueError("no faces to fit the landmark offset on")
  truth = np.stack([np.asarray(record.landmarks, np.float64) for record in records])
  return mean_residual(predict_from_landmark_boxes(model, records, batch_size), truth)


def training_sample(config, faces: int, seed: int = 0) -> list:
  """``faces`` of the config's training faces (the validation carve-out excluded), seeded."""

  train = robustness.records_for(config, None, split="train")
  if faces >= len(train):
    return train
  chosen = np.random.default_rng(seed).choice(len(train), faces, replace=False)
  return [train[index] for index in sorted(chosen)]


def main(argv=None) -> dict:
  import argparse

  parser = argparse.ArgumentParser(
    prog="python -m msm_jax.eval.annotation_offset",
    description="Fit a package's landmark offset on its config's training faces.",
  )
  parser.add_argument("--model", default="pretrained", help="pretrained package folder")
  parser.add_argument("--config", required=True, help="the configs/<name>.py it was trained by")
  parser.add_argument("--faces", type=int, default=DEFAULT_FACES, help="training faces used")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--dry-run", action="store_true", help="print the fit, write nothing")
  args = parser.parse_args(argv)
  if args.faces < 2:
    parser.error(f"--faces {args.faces}: need at least 2")
  model = pretrained.load_pretrained(args.model)
  records = training_sample(cli.load_config_file(args.config), args.faces, args.seed)
  fitted = fit(model, records, args.batch_size)
  print(
    f"landmark offset on {fitted['faces']} training faces: "
    f"dx {fitted['offset'][0]:+.3f} +- {fitted['standard_error'][0]:.3f}, "
    f"dy {fitted['offset'][1]:+.3f} +- {fitted['standard_error'][1]:.3f} px "
    f"(was {list(model.options.landmark_offset)})"
  )
  if not args.dry_run:
    packaging.set_landmark_offset(args.model, fitted["offset"])
    print(f"written to {args.model}/{pretrained.CONFIG_FILE}")
  return fitted


if __name__ == "__main__":
  main()

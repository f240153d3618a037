"""The tracking thresholds of a package (`tracking.TrackingThresholds`), fitted on its config's
validation faces and written into the package (`package.py` does it after training).

The validation split, sorted by image, is shared out: the even-numbered faces fit the
thresholds here, the odd-numbered ones are the video benchmark's (`benchmarks/bench_video.py`),
so the two never share a face (`split_faces`).

  lost_below: the tracker runs over clips of the fitting faces (`msm_jax.data.clips`) with
    nothing lost and every face refined; each tracked face of a frame is a positive (its
    first pass found a face: NME < 20 % against an annotated face) or a negative (a track on
    a frame without a face: the photos may hold faces without annotations, so a track off the
    annotated faces is neither); the threshold maximises Youden's J (true negative rate + true
    positive rate - 1) over the first-pass confidences.
  refine_below, refine_below_detected: on the positives of the tracked crops and on the
    fitting photos through the detector's crops, the lowest threshold whose adaptive NME
    (first pass above it, refined below) is within a tolerance of refining every face: 3 % for
    the tracked crops (the video target is NME within 5 % of the full pipeline on every frame,
    and the crops and the smoothing take their share), 1 % for the detector's (photos must be
    no worse than with the full pipeline, and 1 % is within the spread of two runs).

  python -m msm_jax.eval.tracking_fit --model pretrained --config configs/300w_subset.py \
      [--clips 8] [--dry-run]
"""

import math

import numpy as np

from msm_jax import cli
from msm_jax.core import metrics
from msm_jax.data import clips
from msm_jax.data import images as image_io
from msm_jax.eval import robustness
from msm_jax.inference import pretrained, tracking
from msm_jax.train import packaging

DEFAULT_CLIPS = 8
TOLERANCES = (0.03, 0.01)  # (tracked crops, detector's crops): see the module docstring
FOUND = 0.2  # NME below which a first pass found the face
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)  # of the confidences, in the report
CLIP_SEED = 1000  # the fitting clips' noise; the benchmark's clips start at 0


def split_faces(config) -> tuple[list, list]:
  """(benchmark faces, fitting faces): the config's validation split sorted by image, odd and
  even."""
  records = robustness.records_for(config, None)
  records = sorted(records, key=lambda record: (record.image_path, record.box.tolist()))
  return records[1::2], records[0::2]


def inter_ocular_nme(points, truth) -> float:
  return float(metrics.nme(np.asarray(points)[None], np.asarray(truth)[None], "300w")[0])


def match(found, truth):
  """The found face whose landmarks lie nearest the truth, if its box centre is within half a
  face of the truth's; else None. found: [(landmarks [L, 2], anything)]."""
  box = tracking.landmark_box(truth)
  side = max(box[2] - box[0], box[3] - box[1])
  best = min(found, key=lambda face: np.linalg.norm(face[0] - truth, axis=-1).mean(), default=None)
  if best is None:
    return None

  def centre(points):
    box = tracking.landmark_box(points)
    return (box[:2] + box[2:]) / 2

  return best if np.linalg.norm(centre(best[0]) - centre(truth)) < side / 2 else None


def youden_threshold(positives, negatives) -> tuple[float, dict]:
  """The threshold t (a face is lost below it) that maximises the rate of negatives below t
  plus the rate of positives at or above it, minus 1; midway between two observed values."""
  positives, negatives = np.asarray(positives, float), np.asarray(negatives, float)
  if not len(positives) or not len(negatives):
    raise ValueError(
      f"lost_below needs faces and frames without one: got {len(positives)} and "
      f"{len(negatives)} (too few clips?)"
    )
  values = np.sort(np.concatenate([positives, negatives]))
  candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2])
  best, best_j = candidates[0], -1.0
  for candidate in candidates:
    j = np.mean(negatives < candidate) + np.mean(positives >= candidate) - 1
    if j > best_j:
      best, best_j = float(candidate), float(j)
  return best, {
    "youden_j": round(best_j, 4),
    "positives_kept": round(float(np.mean(positives >= best)), 4),
    "negatives_lost": round(float(np.mean(negatives < best)), 4),
    "positives": len(positives),
    "negatives": len(negatives),
    "quantiles": list(QUANTILES),
    "positive_quantiles": np.round(np.quantile(positives, QUANTILES), 4).tolist(),
    "negative_quantiles": np.round(np.quantile(negatives, QUANTILES), 4).tolist(),
  }


def refine_threshold(confidences, first_nme, refined_nme, tolerance: float):
  """The lowest threshold (fewest faces refined) whose adaptive NME (the first pass above it,
  refined below) is within ``tolerance`` of refining every face."""
  order = np.argsort(confidences)
  confidences, first, refined = (
    np.asarray(a, float)[order] for a in (confidences, first_nme, refined_nme)
  )
  if not len(confidences):
    raise ValueError("refine thresholds need faces: none was found (too few clips or photos?)")
  target = (1 + tolerance) * float(np.mean(refined))
  for count in range(len(confidences) + 1):  # refine the `count` least confident
    adaptive = float(np.mean(np.concatenate([refined[:count], first[count:]])))
    if adaptive <= target:
      break
  if count == 0:
    threshold = 0.0  # none: a confidence is never below 0
  elif count == len(confidences):
    threshold = math.inf
  else:
    threshold = float((confidences[count - 1] + confidences[count]) / 2)
  return threshold, {
    "refined_fraction": round(count / len(confidences), 4),
    "adaptive_nme_percent": round(100 * adaptive, 3),
    "all_refined_nme_percent": round(100 * float(np.mean(refined)), 3),
    "first_pass_nme_percent": round(100 * float(np.mean(first)), 3),
    "faces": len(confidences),
  }


# Nothing lost, every face refined: what the fit measures the first passes against.
_MEASURING = tracking.TrackingThresholds(-math.inf, math.inf, math.inf)


def tracked_samples(model, specs) -> tuple[list, list, list]:
  """The tracker over the clips with no face ever lost and every face refined: (positive
  confidences, negative confidences, (confidence, first-pass NME, refined NME) of the clip's
  face where it was tracked, not just detected)."""
  positives, negatives, tracked = [], [], []
  for spec in specs:
    # The network on every frame: each tracked face is a first pass to measure.
    options = tracking.TrackerOptions(smoothing=None, frame_rate=clips.FRAME_RATE, network_every=1)
    tracker = tracking.Tracker(model, options, _MEASURING)
    for index, frame in enumerate(clips.clip_frames(spec)):
      annotated = ([] if frame.truth is None else [frame.truth]) + list(frame.others)
      for face in tracker.update(frame.image, index / clips.FRAME_RATE):
        if frame.segment == "no face":
          negatives.append(face.first_confidence)
          continue
        near = [t for t in annotated if match([(face.first_landmarks, None)], t) is not None]
        if not near:
          continue  # off the annotated faces, but the photo may hold faces without a .pts
        if min(inter_ocular_nme(face.first_landmarks, truth) for truth in near) >= FOUND:
          continue  # half on a face: neither
        positives.append(face.first_confidence)
        clip_face = frame.truth is not None and any(truth is frame.truth for truth in near)
        if clip_face and not face.detected:
          tracked.append(
            (
              face.first_confidence,
              inter_ocular_nme(face.first_landmarks, frame.truth),
              inter_ocular_nme(face.raw_landmarks, frame.truth),
            )
          )
  return positives, negatives, tracked


def detected_samples(model, records) -> list:
  """(confidence, first-pass NME, refined NME) of each annotated face of the records' photos,
  from the package's detectors' crops, as `predict.py` finds them."""
  photos = {}
  for record in records:
    photos.setdefault(record.image_path, []).append(np.asarray(record.landmarks, np.float64))
  samples = []
  for path, truths in photos.items():
    options = tracking.TrackerOptions(smoothing=None, fallback_detectors=True)
    faces = tracking.Tracker(model, options, _MEASURING).update(
      image_io.load_image(path, apply_exif=False)
    )
    for truth in truths:
      found = match([(face.raw_landmarks, face) for face in faces], truth)
      if found is not None:
        face = found[1]
        samples.append(
          (
            face.first_confidence,
            inter_ocular_nme(face.first_landmarks, truth),
            inter_ocular_nme(face.raw_landmarks, truth),
          )
        )
  return samples


def fit(
  model, records, clip_count: int = DEFAULT_CLIPS, tolerances=TOLERANCES, segment_length=None
) -> tracking.TrackingThresholds:
  """`TrackingThresholds` fitted on the faces ``records`` (module docstring): clips of the first
  ``clip_count`` of them, and every one's photo through the detector. ``segment_length``:
  shorter clips (tests)."""
  specs = clips.clip_specs(records, clip_count, seed=CLIP_SEED, segment_length=segment_length)
  positives, negatives, tracked = tracked_samples(model, specs)
  lost_below, lost = youden_threshold(positives, negatives)
  if not tracked:
    raise ValueError("refine_below needs tracked faces: none was found (too few clips?)")
  refine_below, refine_tracked = refine_threshold(*np.array(tracked).T, tolerances[0])
  detected = detected_samples(model, records)
  if not detected:
    raise ValueError("refine_below_detected needs faces the detector finds: none was found")
  detected_below, refine_detected = refine_threshold(*np.array(detected).T, tolerances[1])
  fitted = {
    "data": f"{len(specs)} clips and the photos of {len(records)} faces: the validation "
    "split's even-numbered faces (msm_jax/eval/tracking_fit.py)",
    "tolerances": list(tolerances),
    "lost": lost,
    "refine_tracked": refine_tracked,
    "refine_detected": refine_detected,
  }
  return tracking.TrackingThresholds(lost_below, refine_below, detected_below, fitted)


def main(argv=None) -> tracking.TrackingThresholds:
  import argparse

  parser = argparse.ArgumentParser(
    prog="python -m msm_jax.eval.tracking_fit",
    description="Fit a package's tracking thresholds on its config's validation faces.",
  )
  parser.add_argument("--model", default="pretrained", help="pretrained package folder")
  parser.add_argument("--config", required=True, help="the configs/<name>.py it was trained by")
  parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS, help="clips of fitting faces")
  parser.add_argument("--dry-run", action="store_true", help="print the fit, write nothing")
  args = parser.parse_args(argv)
  if args.clips < 1:
    parser.error(f"--clips {args.clips}: need at least 1")
  model = pretrained.load_pretrained(args.model)
  _, faces = split_faces(cli.load_config_file(args.config))
  fitted = fit(model, faces, args.clips)
  print(repr(fitted))
  if not args.dry_run:
    packaging.set_tracking_thresholds(args.model, fitted)
    print(f"written to {args.model}/{pretrained.CONFIG_FILE}")
  return fitted


if __name__ == "__main__":
  main()

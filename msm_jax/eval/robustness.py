"""The robustness protocol: a pretrained package run as a user runs it, on faces made harder.

Every face of a folder of images + `.pts` (or a config's validation split) is shown to the
model under these conditions, each seeded so that two runs print the same table:

  landmark box   the tight box of the ground-truth landmarks (the training crop's box)
  detector       the whole photo, no box: `predict.py`'s own detector finds the face
  rotated N      the photo turned by +-N degrees (sign drawn per face) about the face centre;
                 the box is the tight box of the turned landmarks (what a detector would hand
                 over for an upright box around a rolled face)
  sloppy box     the landmark box scaled by U[0.8, 1.25] and shifted by U[-15, 15] % of its
                 size along each axis
  occluded       a rectangle of natural texture (a window of the same photo outside the face
                 box) over 30-50 % of the landmark box; the landmarks under it are "occluded"

Faces are cut out of their photos as a square window 3 x the landmark box's side (turned for
the rotated rows), so every condition but "detector" sees the same pixels around the face.

Rows are the inference variants the package supports (`VARIANTS`: hourglass alone, with the
shape repair, with the re-crop pass, with the test-time flip, with the ST stage when
trained); `evaluate.py --robustness` runs the same protocol on a training run's workdir with
the paper's ablation rows (HG, ST + HG, HG + SR, ST + HG + SR, and the joint stage's).
Columns: NME (mean and median, inter-ocular, %), FR@0.08 (%), NME of the occluded and of the
visible landmarks, the visible ones' NME on the same faces without the occluder (from the
landmark-box run: the occluder mostly hides the nose and the mouth, so the visible landmarks
are a harder mix than the whole face, and this is their clean reference), and the precision
/ recall of `reliable == False` as an occlusion detector.

  python -m msm_jax.eval.robustness --model pretrained --config configs/300w_subset.py \
      [--folder DIR | --split train] [--limit N] [--variants "HG,HG + SR"] [--conditions "occluded"]
      [--out report.json]
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from msm_jax import cli, files
from msm_jax.core import geometry, landmarks, metrics
from msm_jax.data import augment, datasets, w300
from msm_jax.data.images import record_image
from msm_jax.data.records import box_from_landmarks
from msm_jax.inference import prediction, pretrained

ROTATIONS = (15.0, 30.0, 45.0)
SLOPPY_SCALE = (0.8, 1.25)
SLOPPY_SHIFT = 0.15
OCCLUDER_AREA = (0.3, 0.5)
WINDOW = 3.0  # side of the face window / side of the landmark box
MAX_WINDOW = 768  # larger windows are scaled down (faces of 256 px and more)
FAILURE_THRESHOLD = 0.08
# The occlusion flags' precision / recall is also reported with the package's thresholds K
# scaled by these factors (a landmark is flagged when its normalised Eq. 9 score <= s x K).
FLAG_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)


class NoFacesError(ValueError):
  """The protocol was given nothing to run on."""


@dataclasses.dataclass(frozen=True)
class Face:
  """One test face: the photo it is shown in, its box (None: the detector finds it), the
  ground truth in that photo's pixels, and which landmarks an occluder covers (or None)."""

  image: np.ndarray
  box: np.ndarray | None
  landmarks: np.ndarray
  occluded: np.ndarray | None = None


# name -> PipelineOptions fields; a variant needing a stage the package lacks is left out.
VARIANTS = {
  "HG": dict(use_spatial_transformer=False, use_shape_reconstruction=False, recrop_passes=0),
  "ST + HG": dict(use_spatial_transformer=True, use_shape_reconstruction=False, recrop_passes=0),
  "HG + SR": dict(use_spatial_transformer=False, use_shape_reconstruction=True, recrop_passes=0),
  "HG + re-crop": dict(
    use_spatial_transformer=False, use_shape_reconstruction=False, recrop_passes=1
  ),
  "HG + SR + re-crop": dict(
    use_spatial_transformer=False, use_shape_reconstruction=True, recrop_passes=1
  ),
  "HG + SR + re-crop + flip": dict(
    use_spatial_transformer=False, use_shape_reconstruction=True, recrop_passes=1, flip_test=True
  ),
  "ST + HG + SR": dict(
    use_spatial_transformer=True, use_shape_reconstruction=True, recrop_passes=0
  ),
  "ST + HG + SR + re-crop": dict(
    use_spatial_transformer=True, use_shape_reconstruction=True, recrop_passes=1
  ),
  "ST + HG + SR + re-crop + flip": dict(
    use_spatial_transformer=True, use_shape_reconstruction=True, recrop_passes=1, flip_test=True
  ),
}


def rotation_about(centre, degrees: float) -> np.ndarray:
  """[3, 3] pixel matrix turning points by ``degrees`` (counter-clockwise as displayed, y
  down) about ``centre``."""
  angle = -np.deg2rad(degrees)
  cos, sin = np.cos(angle), np.sin(angle)
  cx, cy = centre
  return np.array(
    [[cos, -sin, cx - cos * cx + sin * cy], [sin, cos, cy - sin * cx - cos * cy], [0.0, 0.0, 1.0]]
  )


def face_window(image: np.ndarray, points: np.ndarray, degrees: float = 0.0):
  """The face cut out as a square window (WINDOW x its landmark box, at most MAX_WINDOW
  pixels), turned by ``degrees`` about the box centre: (window uint8, points in it)."""
  box = box_from_landmarks(points)
  centre = (box[:2] + box[2:]) / 2
  side = WINDOW * max(box[2] - box[0], box[3] - box[1])
  size = int(min(MAX_WINDOW, math.ceil(side)))
  square = np.concatenate([centre - side / 2, centre + side / 2])
  matrix = geometry.crop_matrix(square, size) @ rotation_about(centre, degrees)
  window = augment.warp_image(image, matrix, size)
  return window, geometry.apply_affine(points, matrix).astype(np.float32)


def sloppy_box(box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The box scaled by U[SLOPPY_SCALE] about its centre and shifted by U[-s, s] x its size."""
  size = box[2:] - box[:2]
  centre = (box[:2] + box[2:]) / 2 + rng.uniform(-SLOPPY_SHIFT, SLOPPY_SHIFT, 2) * size
  half = rng.uniform(*SLOPPY_SCALE) * size / 2
  return np.concatenate([centre - half, centre + half])


def occlude(image: np.ndarray, points: np.ndarray, rng: np.random.Generator):
  """A rectangle of natural texture over 30-50 % of the landmark box, its centre inside the
  box; the texture is a window of the same image of the patch's size, outside the face box
  (the first of 20 draws that is; else the last draw).
  Returns (occluded image, [L] bool: landmarks under the patch)."""
  box = box_from_landmarks(points)
  width, height = box[2] - box[0], box[3] - box[1]
  area = rng.uniform(*OCCLUDER_AREA) * width * height
  aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
  patch_w = int(np.clip(round(math.sqrt(area / aspect)), 2, image.shape[1]))
  patch_h = int(np.clip(round(math.sqrt(area * aspect)), 2, image.shape[0]))
  centre = box[:2] + rng.uniform(0.2, 0.8, 2) * [width, height]
  left = int(np.clip(round(centre[0] - patch_w / 2), 0, image.shape[1] - patch_w))
  top = int(np.clip(round(centre[1] - patch_h / 2), 0, image.shape[0] - patch_h))
  # The texture comes from outside the face box where it fits (background, hair, clothing:
  # a pasted copy of the face's own eye or mouth would be a second face, not an occluder).
  for _ in range(20):
    source_left = int(rng.integers(0, image.shape[1] - patch_w + 1))
    source_top = int(rng.integers(0, image.shape[0] - patch_h + 1))
    apart = (
      source_left + patch_w <= box[0]
      or source_left >= box[2]
      or source_top + patch_h <= box[1]
      or source_top >= box[3]
    )
    if apart:
      break
  occluded_image = image.copy()
  occluded_image[top : top + patch_h, left : left + patch_w] = image[
    source_top : source_top + patch_h, source_left : source_left + patch_w
  ]
  x, y = points[:, 0], points[:, 1]
  covered = (
    (x >= left - 0.5) & (x < left + patch_w - 0.5) & (y >= top - 0.5) & (y < top + patch_h - 0.5)
  )
  return occluded_image, covered


CONDITIONS = (
  "landmark box",
  "detector",
  *(f"rotated {angle:g}" for angle in ROTATIONS),
  "sloppy box",
  "occluded",
)


def make_conditions(records, seed: int = 0) -> dict[str, list[Face]]:
  """{condition: faces} for the records (FaceRecords with image paths or pixels)."""
  conditions = {name: [] for name in CONDITIONS}
  rng = np.random.default_rng(seed)
  for record in records:
    photo, points = record_image(record), np.asarray(record.landmarks, np.float32)
    conditions["detector"].append(Face(photo, None, points))
    window, in_window = face_window(photo, points)
    box = box_from_landmarks(in_window)
    conditions["landmark box"].append(Face(window, box, in_window))
    for angle in ROTATIONS:
      turned, turned_points = face_window(photo, points, angle * rng.choice([-1.0, 1.0]))
      conditions[f"rotated {angle:g}"].append(
        Face(turned, box_from_landmarks(turned_points), turned_points)
      )
    conditions["sloppy box"].append(Face(window, sloppy_box(box, rng), in_window))
    occluded_window, covered = occlude(window, in_window, rng)
    conditions["occluded"].append(Face(occluded_window, box, in_window, covered))
  return conditions


def detected_face(faces, truth: np.ndarray):
  """The predicted face whose landmarks lie closest to the truth, if its box centre is within
  half a landmark-box side of the truth's (else None: the detector missed this face)."""
  box = box_from_landmarks(truth)
  centre, side = (box[:2] + box[2:]) / 2, max(box[2] - box[0], box[3] - box[1])
  best = min(
    faces, key=lambda face: np.linalg.norm(face.landmarks - truth, axis=-1).mean(), default=None
  )
  if best is None:
    return None
  found = (best.box[:2] + best.box[2:]) / 2
  return best if np.linalg.norm(found - centre) < side / 2 else None


def run_condition(model, faces: list[Face], batch_size: int = 8) -> dict:
  """Predict every face; returns per-face arrays (predictions of missed faces are NaN)."""
  given = [face.box is not None for face in faces]
  if any(given) and not all(given):
    raise ValueError("a condition's faces either all have boxes or none has")
  results = prediction.predict_images(
    model,
    [face.image for face in faces],
    boxes=[face.box[None] for face in faces] if all(given) else None,
    batch_size=batch_size,
    errors="collect",
  )
  num_points = faces[0].landmarks.shape[0]
  predicted = np.full((len(faces), num_points, 2), np.nan, np.float32)
  reliable = np.ones((len(faces), num_points), bool)
  scores = np.full((len(faces), num_points), np.nan, np.float32)
  for index, (face, result) in enumerate(zip(faces, results)):
    found = (
      result.faces[0]
      if all(given) and result.faces
      else detected_face(result.faces, face.landmarks)
    )
    if found is not None:
      predicted[index], reliable[index] = found.landmarks, found.reliable
      scores[index] = found.scores
  return {"predicted": predicted, "reliable": reliable, "scores": scores}


def ground_truth(faces: list[Face]):
  """The faces' landmarks [F, L, 2] and, for an occluded condition, which are covered
  [F, L] (else None)."""
  truth = np.stack([face.landmarks for face in faces])
  if faces[0].occluded is None:
    return truth, None
  return truth, np.stack([face.occluded for face in faces])


def precision_recall(flagged: np.ndarray, occluded: np.ndarray) -> tuple:
  """(precision, recall) of ``flagged`` as a detector of ``occluded``; None where undefined."""
  hits = np.sum(flagged & occluded)
  precision = float(hits / flagged.sum()) if flagged.any() else None
  recall = float(hits / occluded.sum()) if occluded.any() else None
  return precision, recall


def flag_sweep(scores, thresholds, occluded, scales=FLAG_SCALES) -> dict:
  """{"s": [precision, recall]} of ``scores <= s x thresholds`` against ``occluded``.

  scores, occluded: [F, L] of the faces found (normalised Eq. 9 scores; bool);
  thresholds: [L], the package's K per landmark (``reliable`` is ``scores > K``).
  """
  return {
    f"{scale:g}": list(precision_recall(scores <= scale * thresholds, occluded)) for scale in scales
  }


def _masked_nme(predicted, truth, scheme, mask):
  """Inter-ocular NME (%) over the ``mask``ed landmarks, averaged over the faces that have
  any; None when none has."""
  values = metrics.nme(predicted, truth, scheme, "inter_ocular", mask=mask)
  return 100 * float(np.nanmean(values)) if np.isfinite(values).any() else None


def summarise(
  predicted,
  truth,
  reliable,
  occluded,
  scheme,
  threshold: float = FAILURE_THRESHOLD,
  scores=None,
  thresholds=None,
  clean_predicted=None,
) -> dict:
  """One row: NME (%) mean / median over the faces found, FR (%), found count, and where
  occlusion flags exist, occluded / visible-landmark NME (%), the precision / recall of
  ``reliable == False`` against them and, given the scores and the thresholds K, the same at
  K x FLAG_SCALES (``occlusion_flags``); given ``clean_predicted`` (the same faces without the
  occluder), the visible landmarks' NME there (``visible_clean_nme``, on the faces found in
  both)."""
  found = np.all(np.isfinite(predicted), axis=(1, 2))
  row = {"faces": int(len(found)), "found": int(found.sum())}
  if not found.any():
    return row
  nmes = metrics.nme(predicted[found], truth[found], scheme, "inter_ocular")
  row.update(
    nme=100 * float(nmes.mean()),
    median=100 * float(np.median(nmes)),
    failure_rate=100 * metrics.failure_rate(nmes, threshold),
  )
  if occluded is not None and clean_predicted is not None:
    both = found & np.all(np.isfinite(clean_predicted), axis=(1, 2))
    row["visible_clean_nme"] = _masked_nme(
      clean_predicted[both], truth[both], scheme, ~occluded[both]
    )
  if occluded is not None:
    occluded, flagged = occluded[found], ~reliable[found]
    for name, mask in (("occluded_nme", occluded), ("visible_nme", ~occluded)):
      row[name] = _masked_nme(predicted[found], truth[found], scheme, mask)
    row["occlusion_precision"], row["occlusion_recall"] = precision_recall(flagged, occluded)
    if scores is not None:
      row["occlusion_flags"] = flag_sweep(scores[found], thresholds, occluded)
  return row


def variants_of(model) -> dict:
  """{variant name: PretrainedModel with those options} for the variants the package has."""
  stages = model.model.available
  chosen = {}
  for name, fields in VARIANTS.items():
    if fields["use_spatial_transformer"] and "stgan" not in stages:
      continue
    if fields["use_shape_reconstruction"] and "dictionary" not in stages:
      continue
    if fields.get("flip_test"):  # the scheme's left/right permutation
      scheme = landmarks.get_scheme(model.config.data.scheme)
      fields = dict(fields, flip_test=tuple(scheme.flip_permutation))
    fields = {"flip_test": None, **fields}
    chosen[name] = dataclasses.replace(model, options=dataclasses.replace(model.options, **fields))
  return chosen


def evaluate(
  model, records, seed: int = 0, batch_size: int = 8, log=print, variants=None, conditions=None
) -> dict:
  """{condition: {variant: row}} over the records (see the module docstring); ``variants``,
  ``conditions``: the names to run (default: every variant the package supports, every
  condition). A condition's faces are the same whichever others are run."""
  scheme = landmarks.get_scheme(model.config.data.scheme)
  thresholds = np.asarray(model.model.variables["thresholds"])  # what the pipeline flags with
  made = make_conditions(records, seed)
  table = {}
  for variant, variant_model in variants_of(model).items():
    if variants and variant not in variants:
      continue
    clean_predicted = None  # the landmark-box run's, the occluded faces' clean reference
    for condition, faces in made.items():
      if conditions and condition not in conditions:
        continue
      out = run_condition(variant_model, faces, batch_size)
      if condition == "landmark box":
        clean_predicted = out["predicted"]
      truth, occluded = ground_truth(faces)
      row = summarise(
        out["predicted"],
        truth,
        out["reliable"],
        occluded,
        scheme,
        scores=out["scores"],
        thresholds=thresholds,
        clean_predicted=clean_predicted,
      )
      table.setdefault(condition, {})[variant] = row
      log(
        f"[robustness] {variant:24s} {condition:14s} "
        + ", ".join(
          f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
          for key, value in row.items()
          if key != "occlusion_flags"
        )
      )
  return table


# The rows of `evaluate.py --robustness` (the paper's ablation rows, one pass each).
PROTOCOL_VARIANTS = ("HG", "ST + HG", "HG + SR", "ST + HG + SR")
JOINT_SUFFIX = " (joint)"


def evaluate_trained(model, config, records, seed: int = 0, batch_size: int = 8, log=print):
  """The protocol's rows for a trained model (`pipeline.TrainedModel`, as `model_io` loads a
  workdir): PROTOCOL_VARIANTS with the stages it has, and the ST rows of the jointly
  fine-tuned networks, suffixed " (joint)", when that stage was trained."""
  table = evaluate(
    pretrained.from_trained(model, config), records, seed, batch_size, log, PROTOCOL_VARIANTS
  )
  if "joint" in model.variants:
    joint = pretrained.from_trained(model.variant("joint"), config)
    st_rows = [name for name in PROTOCOL_VARIANTS if name.startswith("ST")]
    for condition, rows in evaluate(joint, records, seed, batch_size, log, st_rows).items():
      table[condition].update({name + JOINT_SUFFIX: row for name, row in rows.items()})
  return table


def markdown(table: dict) -> str:
  """The table as Markdown: one block of rows per condition."""

  def cell(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"

  lines = [
    "| condition | variant | found | NME % | median % | FR@0.08 % | occluded NME % "
    "| visible NME % | visible, clean NME % | occl. precision | occl. recall |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for condition, rows in table.items():
    for variant, row in rows.items():
      lines.append(
        f"| {condition} | {variant} | {row['found']}/{row['faces']} | "
        f"{cell(row.get('nme'))} | {cell(row.get('median'))} | "
        f"{cell(row.get('failure_rate'))} | {cell(row.get('occluded_nme'))} | "
        f"{cell(row.get('visible_nme'))} | {cell(row.get('visible_clean_nme'))} | "
        f"{cell(row.get('occlusion_precision'))} | "
        f"{cell(row.get('occlusion_recall'))} |"
      )
  swept = [
    (condition, variant, row["occlusion_flags"])
    for condition, rows in table.items()
    for variant, row in rows.items()
    if row.get("occlusion_flags")
  ]
  if swept:
    scales = list(swept[0][2])
    lines += [
      "",
      "Occlusion flags, precision / recall, with the thresholds K scaled:",
      "",
      "| condition | variant | " + " | ".join(f"K x {scale}" for scale in scales) + " |",
      "|---|---|" + "---:|" * len(scales),
    ]
    for condition, variant, flags in swept:
      cells = [f"{cell(flags[scale][0])} / {cell(flags[scale][1])}" for scale in scales]
      lines.append(f"| {condition} | {variant} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


SPLITS = ("validation", "train")


def records_for(config, folder: str | None, limit: int | None = None, split: str = "validation"):
  """The faces of a folder (tree) of images + `.pts`, or else the config's ``split`` of its
  training data ("validation", or "train": e.g. to calibrate on faces the test never sees)."""
  if split not in SPLITS:
    raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
  if folder:
    records = [
      record for path in datasets.pts_folders(folder) for record in w300.read_pts_folder(path)
    ]
  else:
    train, validation = datasets.split_records(config, datasets.read_training_records(config))
    records = validation if split == "validation" else train
    if not records:
      raise NoFacesError(f"the config has no {split} split: give a folder of images + .pts")
  return records[:limit] if limit else records


def main(argv=None) -> dict:
  import argparse

  parser = argparse.ArgumentParser(
    prog="python -m msm_jax.eval.robustness", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument("--model", default="pretrained", help="pretrained package folder")
  parser.add_argument("--config", help="a configs/<name>.py whose validation split is used")
  parser.add_argument("--folder", help="a folder (tree) of images + .pts instead")
  parser.add_argument("--limit", type=int, help="the first N faces only")
  parser.add_argument(
    "--split", default="validation", choices=SPLITS, help="which of the config's splits"
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument(
    "--variants",
    help=f"comma list of variant names (default: all the package supports: {', '.join(VARIANTS)})",
  )
  parser.add_argument(
    "--conditions", help=f"comma list of conditions (default: all: {', '.join(CONDITIONS)})"
  )
  parser.add_argument("--out", help="write the table as JSON here")
  args = parser.parse_args(argv)
  if not args.config and not args.folder:
    parser.error("give --config (its validation split) or --folder")
  model = pretrained.load_pretrained(args.model)
  config = cli.load_config_file(args.config) if args.config else None
  try:
    records = records_for(config, args.folder, args.limit, args.split)
  except NoFacesError as error:
    parser.error(str(error))
  variants = [name.strip() for name in args.variants.split(",")] if args.variants else None
  unknown = sorted(set(variants or ()) - set(VARIANTS))
  if unknown:
    parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
  conditions = [name.strip() for name in args.conditions.split(",")] if args.conditions else None
  unknown = sorted(set(conditions or ()) - set(CONDITIONS))
  if unknown:
    parser.error(f"unknown conditions {unknown}; choose from {', '.join(CONDITIONS)}")
  table = evaluate(
    model, records, args.seed, args.batch_size, variants=variants, conditions=conditions
  )
  print(markdown(table))
  if args.out:
    files.write_json(args.out, {"faces": len(records), "seed": args.seed, "table": table})
  return table


if __name__ == "__main__":
  main()

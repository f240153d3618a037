"""What a trained package gains from inference alone: decoders, more crops, averaged weights.

  python -m msm_jax.eval.inference_levers --config configs/300w_subset.py [--model pretrained]
      [--soup PACKAGE ...] [--limit N] [--out table.json]

Every row is the inter-ocular NME % (and median) on the landmark-box faces of the robustness
protocol (`msm_jax.eval.robustness.make_conditions`, seed 0), for the one-pass hourglass ("HG")
and the package's default pipeline:

- decoder: the maps decoded by argmax, a quarter pixel towards the larger neighbour, DARK
  without a blur, and DARK after a Gaussian blur of each width in BLUR_SIGMAS (the training
  sigma is the package's default);
- crops: the landmarks of the given box averaged with those of the boxes of CROP_OFFSETS
  (scaled about the centre, shifted by a fraction of the box), 7 passes instead of 1;
- soup: the landmark network's weights and BatchNorm statistics averaged over the package and
  the ``--soup`` packages (networks fine-tuned from one another share a basin).
"""

import argparse
import dataclasses

import jax
import numpy as np

from msm_jax import cli, files
from msm_jax.core import landmarks
from msm_jax.eval import robustness
from msm_jax.inference import pretrained

BLUR_SIGMAS = (1.0, 1.5, 2.0, 2.5)
DECODERS = (
  ("argmax", "argmax", None),
  ("quarter pixel", "quarter", None),
  ("DARK, no blur", "dark", None),
  *((f"DARK, blur {sigma:g}", "dark", sigma) for sigma in BLUR_SIGMAS),
)
# (scale, shift x, shift y) of the extra crops; shifts in box sides.
CROP_OFFSETS = (
  (0.92, 0.0, 0.0),
  (1.08, 0.0, 0.0),
  (1.0, 0.04, 0.0),
  (1.0, -0.04, 0.0),
  (1.0, 0.0, 0.04),
  (1.0, 0.0, -0.04),
)
PIPELINES = ("HG", "HG + SR + re-crop + flip")


def moved_box(box: np.ndarray, scale: float, shift_x: float, shift_y: float) -> np.ndarray:
  """[4] box scaled by ``scale`` about its centre, then shifted by (shift_x, shift_y) x its
  size."""
  size = box[2:] - box[:2]
  centre = (box[:2] + box[2:]) / 2 + np.array([shift_x, shift_y]) * size
  half = scale * size / 2
  return np.concatenate([centre - half, centre + half])


def soup(models: list) -> pretrained.PretrainedModel:
  """The first package with its landmark network's variables averaged over all of them."""
  first = models[0]
  stage = first.options.landmark_stage
  average = jax.tree.map(
    lambda *leaves: sum(leaves) / len(leaves), *[model.model.variables[stage] for model in models]
  )
  variables = dict(first.model.variables, **{stage: average})
  return dataclasses.replace(first, model=dataclasses.replace(first.model, variables=variables))


def _row_and_landmarks(model, faces, truth, scheme) -> tuple:
  """The summary row of the faces predicted by ``model``, and its landmarks [F, L, 2]."""
  predicted = robustness.run_condition(model, faces)["predicted"]
  return _summary(predicted, truth, scheme), predicted


def _summary(predicted, truth, scheme) -> dict:
  row = robustness.summarise(predicted, truth, np.ones(truth.shape[:2], bool), None, scheme)
  return {"nme": row["nme"], "median": row["median"]}


def levers(model, records, soup_models=(), log=print) -> dict:
  """{lever: {pipeline: {"nme", "median"}}} on the records' landmark-box faces."""
  faces = robustness.make_conditions(records, seed=0)["landmark box"]
  truth, _ = robustness.ground_truth(faces)
  scheme = landmarks.get_scheme(model.config.data.scheme)
  variants = robustness.variants_of(model)
  table = {}

  def record(lever, pipeline, row):
    table.setdefault(lever, {})[pipeline] = row
    log(f"[levers] {lever:24s} {pipeline:26s} NME {row['nme']:.3f} median {row['median']:.3f}")

  for pipeline_name in PIPELINES:
    variant = variants[pipeline_name]
    for label, method, sigma in DECODERS:
      options = dataclasses.replace(variant.options, decode_method=method, decode_blur_sigma=sigma)
      record(
        label,
        pipeline_name,
        _row_and_landmarks(dataclasses.replace(variant, options=options), faces, truth, scheme)[0],
      )
    row, predicted = _row_and_landmarks(variant, faces, truth, scheme)
    record("package default", pipeline_name, row)
    passes = [predicted]
    for offset in CROP_OFFSETS:
      moved = [dataclasses.replace(face, box=moved_box(face.box, *offset)) for face in faces]
      passes.append(_row_and_landmarks(variant, moved, truth, scheme)[1])
    record(
      f"{len(passes)} crops averaged", pipeline_name, _summary(np.mean(passes, 0), truth, scheme)
    )
    if soup_models:
      souped = robustness.variants_of(soup([model, *soup_models]))[pipeline_name]
      record(
        f"soup of {1 + len(soup_models)}",
        pipeline_name,
        _row_and_landmarks(souped, faces, truth, scheme)[0],
      )
  return table


def markdown(table: dict) -> str:
  lines = [
    "| lever | " + " | ".join(f"{name}: NME % (median)" for name in PIPELINES) + " |",
    "|---|" + "---:|" * len(PIPELINES),
  ]
  for lever, rows in table.items():
    cells = [f"{rows[name]['nme']:.3f} ({rows[name]['median']:.3f})" for name in PIPELINES]
    lines.append(f"| {lever} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
    prog="python -m msm_jax.eval.inference_levers", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument("--config", required=True, help="a configs/<name>.py: its validation split")
  parser.add_argument("--model", default="pretrained", help="pretrained package folder")
  parser.add_argument("--soup", nargs="*", default=(), help="packages to average with --model")
  parser.add_argument("--limit", type=int, help="the first N faces only")
  parser.add_argument("--out", help="write the table as JSON here")
  args = parser.parse_args(argv)
  model = pretrained.load_pretrained(args.model)
  soup_models = [pretrained.load_pretrained(path) for path in args.soup]
  records = robustness.records_for(cli.load_config_file(args.config), None, args.limit)
  table = levers(model, records, soup_models)
  print(markdown(table))
  if args.out:
    files.write_json(args.out, {"faces": len(records), "model": args.model, "table": table})
  return table


if __name__ == "__main__":
  main()

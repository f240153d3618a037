"""Two packages on the same faces: the robustness protocol's conditions (`robustness.py`), each
package run as shipped (its default pipeline), and per condition the paired difference of
their per-face NME (mean +- standard error over the faces both found), for the whole face, the
face contour and the inner features; under the occluder also the hidden landmarks' NME and
the occlusion flags. Whether a new model is as good as the shipped one is read here: a
difference within about two standard errors of zero is noise on these faces.

  python -m msm_jax.eval.package_comparison --model runs/300w_subset_package \
      --baseline pretrained --config configs/300w_subset.py [--limit N] [--out report.json]
"""

from __future__ import annotations

import numpy as np

from msm_jax import cli, files
from msm_jax.core import landmarks, metrics
from msm_jax.eval import robustness
from msm_jax.inference import pretrained

REGIONS = ("face", "contour", "features")


def region_masks(scheme) -> dict[str, np.ndarray]:
  """{region: [L] bool}: every landmark, the face contour (Table IX's low-threshold group),
  the inner features."""
  contour = np.zeros(scheme.num_points, bool)
  contour[list(scheme.contour_indices)] = True
  return {"face": np.ones(scheme.num_points, bool), "contour": contour, "features": ~contour}


def paired(first: np.ndarray, second: np.ndarray) -> dict:
  """Means of two per-face NME arrays (%) and their paired difference first - second: mean
  and standard error (None below two faces)."""
  difference = first - second
  error = float(difference.std(ddof=1) / np.sqrt(difference.size)) if difference.size > 1 else None
  return {
    "model": float(first.mean()),
    "baseline": float(second.mean()),
    "difference": float(difference.mean()),
    "standard_error": error,
  }


def compare(model_run: dict, baseline_run: dict, truth, occluded, scheme) -> dict:
  """One condition's row from the two `robustness.run_condition` outputs on the same faces.

  truth: [F, L, 2]; occluded: [F, L] bool or None. Returns {"faces", "both_found",
  <region>: `paired` of the per-face inter-ocular NME (%)} and, with ``occluded``, "hidden"
  (the occluded landmarks' NME, faces with any) and "flags" {"model", "baseline":
  [precision, recall] of ``reliable == False``}.
  """
  predictions = (model_run["predicted"], baseline_run["predicted"])
  both = np.logical_and(*[np.all(np.isfinite(p), axis=(1, 2)) for p in predictions])
  row = {"faces": int(len(both)), "both_found": int(both.sum())}
  if not both.any():
    return row

  def per_face(predicted, mask):
    masks = np.broadcast_to(mask, truth[both].shape[:2])
    return 100 * metrics.nme(predicted[both], truth[both], scheme, "inter_ocular", mask=masks)

  for region, mask in region_masks(scheme).items():
    row[region] = paired(*(per_face(predicted, mask) for predicted in predictions))
  if occluded is not None:
    hidden = [per_face(predicted, occluded[both]) for predicted in predictions]
    some = np.isfinite(hidden[0])  # faces with an occluded landmark
    if some.any():
      row["hidden"] = paired(hidden[0][some], hidden[1][some])
    row["flags"] = {
      name: list(robustness.precision_recall(~run["reliable"][both], occluded[both]))
      for name, run in (("model", model_run), ("baseline", baseline_run))
    }
  return row


def evaluate(model, baseline, records, seed: int = 0, batch_size: int = 8, log=print) -> dict:
  """{condition: `compare` row} of the two packages over the records' faces."""
  if model.config.data.scheme != baseline.config.data.scheme:
    raise ValueError(
      f"the packages mark different landmarks: {model.config.data.scheme} and "
      f"{baseline.config.data.scheme}"
    )
  scheme = landmarks.get_scheme(model.config.data.scheme)
  table = {}
  for condition, faces in robustness.make_conditions(records, seed).items():
    runs = [robustness.run_condition(package, faces, batch_size) for package in (model, baseline)]
    truth, occluded = robustness.ground_truth(faces)
    table[condition] = compare(*runs, truth, occluded, scheme)
    face = table[condition].get("face")
    if face:
      log(
        f"[comparison] {condition:14s} {face['model']:.2f} vs {face['baseline']:.2f} %, "
        f"paired {face['difference']:+.3f} +- {face['standard_error'] or 0:.3f}"
      )
  return table


def _cell(pair: dict | None) -> str:
  if not pair:
    return "-"
  error = "" if pair["standard_error"] is None else f" +- {pair['standard_error']:.2f}"
  return f"{pair['model']:.2f} / {pair['baseline']:.2f} ({pair['difference']:+.2f}{error})"


def markdown(table: dict) -> str:
  """The table as Markdown: model / baseline NME % (paired difference +- standard error)."""
  lines = [
    "| condition | both found | face | contour | features | hidden landmarks | flags P / R |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for condition, row in table.items():
    flags = row.get("flags")
    flag_cell = (
      " vs ".join(
        "/".join("-" if value is None else f"{value:.2f}" for value in flags[name])
        for name in ("model", "baseline")
      )
      if flags
      else "-"
    )
    cells = [_cell(row.get(region)) for region in (*REGIONS, "hidden")]
    lines.append(f"| {condition} | {row['both_found']}/{row['faces']} | " + " | ".join(cells))
    lines[-1] += f" | {flag_cell} |"
  return "\n".join(lines)


def main(argv=None) -> dict:
  import argparse

  parser = argparse.ArgumentParser(
    prog="python -m msm_jax.eval.package_comparison", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument("--model", required=True, help="the package to judge")
  parser.add_argument("--baseline", default="pretrained", help="the package to judge it against")
  parser.add_argument("--config", help="a configs/<name>.py whose validation split is used")
  parser.add_argument("--folder", help="a folder (tree) of images + .pts instead")
  parser.add_argument("--limit", type=int, help="the first N faces only")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--out", help="write the table as JSON here")
  args = parser.parse_args(argv)
  if not args.config and not args.folder:
    parser.error("give --config (its validation split) or --folder")
  model, baseline = (pretrained.load_pretrained(path) for path in (args.model, args.baseline))
  config = cli.load_config_file(args.config) if args.config else None
  try:
    records = robustness.records_for(config, args.folder, args.limit)
  except robustness.NoFacesError as error:
    parser.error(str(error))
  table = evaluate(model, baseline, records, args.seed, args.batch_size)
  print(markdown(table))
  if args.out:
    files.write_json(
      args.out,
      {"model": args.model, "baseline": args.baseline, "faces": len(records), "table": table},
    )
  return table


if __name__ == "__main__":
  main()

"""`evaluate.py`'s body: run the trained pipeline on every evaluation subset and report.

For each subset the one-jit pipeline (Algorithm 2) runs twice, with the ST stage on and off;
each run returns the landmarks before and after the shape repair, so the four ablation rows
of Tables VII/VIII (HG, ST-GAN + HG, HG + SR, ST-GAN + HG + SR) cost two passes, the
Res-50 rows (when that baseline was trained) two more, and the jointly fine-tuned GDNN and
hourglass (stage "joint", when trained) one more, as "ST-GAN + HG (joint)" and its "+ SR"
row. The full model is also reported as "MSM" in the dataset's own table (III/IV, V or VI).
A mean-shape row gives the scale of the numbers. Table IX's threshold sweep keeps the full
model's hourglass outputs and reruns only the reliability test and the shape repair for each
threshold pair.

Faces enter as the evaluation crops of the input pipeline (the record's box with the config's
margin, 128x128): exactly what the ST-GAN saw in training as I_fake. Predictions are mapped
back to original-image pixels and compared with the annotations there. These crops carry no
context around the face, so the evaluation runs Algorithm 2 in one pass: a re-crop pass
(`config.inference.recrop_passes`) would sample zeros where the photo was; it is measured on
whole photos by `msm_jax.eval.robustness`.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from msm_jax import files
from msm_jax.core import geometry, heatmaps, landmarks
from msm_jax.data import augment, datasets, input_pipeline, overlays
from msm_jax.eval import reports, robustness, subset_metrics
from msm_jax.inference import pipeline
from msm_jax.train import model_io

FULL_MODEL = "ST-GAN + HG + SR"
MEAN_SHAPE_TRAINING_FACES = 500  # enough for a stable mean; rendering more costs time


def predict_source(infer, variables, source, config) -> dict:
  """Run `infer` over a source's evaluation crops; arrays over all faces of the source."""
  size, batch_size = config.data.crop_size, config.eval.batch_size
  whole_crop = np.array([-0.5, -0.5, size - 0.5, size - 0.5], np.float32)
  collected = {
    key: []
    for key in (
      "final",
      "hourglass",
      "scores",
      "reliable",
      "gt",
      "occluded",
      "crop_to_image",
      "crops",
      "canonical_points",
      "canonical_to_image",
    )
  }
  for batch in input_pipeline.eval_dataset(source, config, batch_size=batch_size, worker_count=0):
    count = len(batch["index"])
    images = np.zeros((batch_size, size, size, 3), np.uint8)  # one shape: one compilation
    images[:count] = batch["images"]
    out = infer(variables, jnp.asarray(images), jnp.broadcast_to(whole_crop, (batch_size, 4)))
    to_image = geometry.invert_affine(batch["crop_matrix"].astype(np.float64))
    collected["final"].append(
      geometry.apply_affine(np.asarray(out["landmarks"][:count], np.float64), to_image)
    )
    collected["hourglass"].append(
      geometry.apply_affine(np.asarray(out["hourglass_landmarks"][:count], np.float64), to_image)
    )
    collected["scores"].append(np.asarray(out["scores"][:count]))
    collected["reliable"].append(np.asarray(out["reliable"][:count]))
    collected["gt"].append(batch["image_landmarks"])
    collected["occluded"].append(batch["occluded"])
    collected["crop_to_image"].append(to_image)
    collected["canonical_points"].append(np.asarray(out["canonical_landmarks"][:count]))
    collected["canonical_to_image"].append(
      to_image @ np.asarray(out["canonical_to_image"][:count], np.float64)
    )
    collected["crops"].append(
      np.stack(
        [
          batch["images"][:count],
          np.asarray(out["canonical_faces"][:count] * 255).clip(0, 255).astype(np.uint8),
        ],
        1,
      )
    )
  return {key: np.concatenate(value) for key, value in collected.items()}


def _subset(name, predictions, landmarks_key, with_occlusion: bool):
  return subset_metrics.SubsetPredictions(
    name=name,
    pred=predictions[landmarks_key],
    gt=predictions["gt"],
    occluded=predictions["occluded"] if with_occlusion else None,
    reliable=predictions["reliable"],
    scores=predictions["scores"],
  )


def mean_shape_in_crops(config, count: int = MEAN_SHAPE_TRAINING_FACES) -> np.ndarray:
  """[N, L, 2] training landmarks in their ground-truth-box crops (the baseline's mean)."""
  train_source, _ = datasets.train_and_validation_sources(config)
  shapes = []
  for index in range(min(count, len(train_source))):
    example = train_source[index]
    if example is None:
      continue
    matrix = augment.face_crop_matrix(example["box"], config.data.crop_size, config.data.box_margin)
    shapes.append(geometry.apply_affine(example["landmarks"].astype(np.float64), matrix))
  return np.stack(shapes)


def save_overlays(path: str, predictions: dict, count: int = 8, zoom: int = 2) -> None:
  """Detector crop | canonical face with the final landmarks (green reliable, red repaired)."""
  count = min(count, len(predictions["final"]))
  tiles = []
  for index in range(count):
    crop, canonical = predictions["crops"][index]
    crop_matrix = np.linalg.inv(predictions["crop_to_image"][index])
    in_crop = geometry.apply_affine(predictions["final"][index], crop_matrix)
    tiles.append(
      np.concatenate(
        [
          np.asarray(
            overlays.draw_landmarks(crop, [(in_crop, ~predictions["reliable"][index], None)], zoom)
          ),
          np.asarray(
            Image.fromarray(canonical).resize((crop.shape[1] * zoom, crop.shape[0] * zoom))
          ),
        ],
        axis=1,
      )
    )
  with files.atomic_write(path, "wb") as file:
    Image.fromarray(np.concatenate(tiles, axis=0)).save(file, format="PNG")


def _one_pass(options: pipeline.PipelineOptions) -> pipeline.PipelineOptions:
  return dataclasses.replace(options, recrop_passes=0)  # see the module docstring


def _variants(model: pipeline.TrainedModel, config) -> list[tuple]:
  """(row of the landmarks before repair, row after repair or None, inference function, its
  pipeline options, the variables it runs with)."""
  use_sr = "dictionary" in model.available
  st_settings = (False, True) if "stgan" in model.available else (False,)
  variants = []
  for st in st_settings:
    prefix = "ST-GAN + " if st else ""
    options = _one_pass(pipeline.options_from_config(config, st, use_sr))
    after = prefix + "HG + SR" if use_sr else None
    variants.append((prefix + "HG", after, model.inference_fn(options), options, model.variables))
    if "resnet" in model.available:
      options = _one_pass(pipeline.options_from_config(config, st, False, landmark_stage="resnet"))
      variants.append(
        (prefix + "Res-50", None, model.inference_fn(options), options, model.variables)
      )
  if "joint" in model.variants:
    joint = model.variant("joint")
    options = _one_pass(pipeline.options_from_config(config, True, use_sr))
    after = "ST-GAN + HG + SR" + robustness.JOINT_SUFFIX if use_sr else None
    variants.append(
      (
        "ST-GAN + HG" + robustness.JOINT_SUFFIX,
        after,
        joint.inference_fn(options),
        options,
        joint.variables,
      )
    )
  return variants


def evaluate(config, workdir: str, out_dir: str | None = None, log=print) -> str:
  """Evaluate the workdir's trained model on the configured subsets; returns the Markdown."""
  scheme = landmarks.get_scheme(config.data.scheme)
  out_dir = out_dir or os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  model = model_io.load_trained(config, workdir)
  log(f"evaluating {sorted(model.available)} from {workdir}")
  variants = _variants(model, config)
  threshold, norms = config.eval.failure_threshold, tuple(config.eval.norms)
  sources = datasets.eval_sources(config)
  baseline_shapes = mean_shape_in_crops(config)
  with_occlusion = datasets.evaluation_dataset(config).occlusion_flags

  sweep_subset = config.eval.get("threshold_sweep_subset", "") or next(iter(sources))
  rows, curves, sweep = {}, {}, None
  for subset_name, source in sources.items():
    overlay = None
    for before_name, after_name, infer, options, variables in variants:
      predictions = predict_source(infer, variables, source, config)
      if after_name == FULL_MODEL and subset_name == sweep_subset:
        sweep = (predictions, options)
      named = [(before_name, "hourglass")] + ([(after_name, "final")] if after_name else [])
      for method, key in named:
        subset = _subset(subset_name, predictions, key, with_occlusion)
        rows.setdefault(method, {})[subset_name] = subset_metrics.subset_metrics(
          subset, scheme, norms, threshold
        )
        curves.setdefault(subset_name, {})[method] = subset_metrics.subset_nmes(subset, scheme)
      if after_name == FULL_MODEL or overlay is None:  # the full model
        overlay = predictions
    save_overlays(os.path.join(out_dir, f"overlay_{reports.file_stem(subset_name)}.png"), overlay)
    baseline = subset_metrics.mean_shape_baseline(
      baseline_shapes, config.data.crop_size, predictions["crop_to_image"]
    )
    baseline_subset = subset_metrics.SubsetPredictions(subset_name, baseline, predictions["gt"])
    rows.setdefault(reports.MEAN_SHAPE_METHOD, {})[subset_name] = subset_metrics.subset_metrics(
      baseline_subset, scheme, norms, threshold
    )
    log(f"  {subset_name}: {len(predictions['gt'])} faces")

  tables = _tables(config, rows, sources, with_occlusion)
  if sweep is not None:
    tables.update(_threshold_sweep(*sweep, model.variables, sweep_subset, config, scheme))
  markdown = reports.write_report(out_dir, "report", tables, curves, threshold)
  # The console gets the tables; the report's CED plots and overlays are files beside it.
  log("\n".join(reports.markdown_table(table) for table in tables.values()))
  log(f"report, CED plots and overlays: {out_dir}")
  return markdown


# The paper's tables by `Dataset.paper_tables`: (rows, full-model rows) -> {name: table}.
PAPER_TABLES = {
  "300w": lambda rows, full_rows: reports.tables_300w(full_rows),
  "cofw": lambda rows, full_rows: {
    **reports.tables_cofw(full_rows, subset="test"),
    **reports.ablation_tables(rows, "cofw", subset="test"),
  },
  "wflw": lambda rows, full_rows: {
    **reports.tables_wflw(full_rows, fullset="full"),
    **reports.ablation_tables(rows, "wflw", subset="full"),
  },
}


def _tables(config, rows, sources, with_occlusion: bool) -> dict:
  paper = datasets.evaluation_dataset(config).paper_tables
  full_rows = {"MSM": rows[FULL_MODEL]} if FULL_MODEL in rows else {}
  tables = {}
  if paper and full_rows:
    try:
      tables.update(PAPER_TABLES[paper](rows, full_rows))
    except reports.NoTableError:  # e.g. a validation split: the ablation table below remains
      pass
  columns = [
    (subset, metric) for subset in sources for metric in ("nme_inter_ocular", "failure_rate", "auc")
  ]
  tables["ablation"] = reports.results_table(
    _ordered(rows),
    [(s, m, f"{s} {reports.metric_label(m)}") for s, m in columns],
    "Ablation (inter-ocular NME %, failure rate %, AUC)",
  )
  if with_occlusion:
    for subset in sources:
      tables.update(reports.occlusion_table(_ordered(rows), subset))
  return tables


def _ordered(rows: dict) -> dict:
  order = [name for name in reports.ABLATION_METHODS if name in rows]
  order += [name for name in rows if name not in order]
  return {name: rows[name] for name in order}


def _threshold_sweep(predictions, options, variables, subset_name, config, scheme) -> dict:
  """Table IX from one pipeline run: the hourglass outputs of ``predictions`` are kept and
  only the reliability test and the shape repair run again for each threshold pair."""

  @jax.jit
  def repaired(points, scores, thresholds, dictionary):
    reliable = heatmaps.reliable_mask(scores, thresholds)
    return pipeline.repair_shapes(points, reliable, dictionary, options), reliable

  def predict_with(contour, feature):
    thresholds = jnp.asarray(landmarks.region_thresholds(scheme, contour, feature))
    points, reliable = repaired(
      predictions["canonical_points"], predictions["scores"], thresholds, variables["dictionary"]
    )
    final = geometry.apply_affine(np.asarray(points, np.float64), predictions["canonical_to_image"])
    swept = dict(predictions, final=final, reliable=np.asarray(reliable))
    return _subset(subset_name, swept, "final", with_occlusion=False)

  sweep = subset_metrics.threshold_sweep(
    predict_with, scheme, failure_threshold=config.eval.failure_threshold
  )
  return reports.threshold_table(
    sweep, subset=subset_name, with_paper=config.data.get("eval_dataset", "") == "cofw68"
  )


def evaluate_robustness(
  config, workdir: str, out_dir: str, folder: str | None = None, limit: int | None = None, log=print
) -> str:
  """`msm_jax.eval.robustness`'s protocol on the workdir's trained model (rows HG, ST + HG, HG +
  SR, ST + HG + SR, and the joint stage's), on ``folder``'s images + `.pts` or the config's
  validation split; writes robustness.{md,json} to ``out_dir``, returns the Markdown."""
  model = model_io.load_trained(config, workdir)
  records = robustness.records_for(config, folder, limit)
  log(f"robustness protocol: {len(records)} faces, stages {sorted(model.available)}")
  table = robustness.evaluate_trained(model, config, records, log=log)
  text = robustness.markdown(table)
  os.makedirs(out_dir, exist_ok=True)
  files.write_text(os.path.join(out_dir, "robustness.md"), text + "\n")
  files.write_json(
    os.path.join(out_dir, "robustness.json"), {"faces": len(records), "seed": 0, "table": table}
  )
  log(text)
  return text

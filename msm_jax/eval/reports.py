"""The paper's result tables, CED plots and report files (Sec. IV-B, Tables III-IX).

Input: per-method, per-subset metric dicts from ``evaluation.subset_metrics``,
``{method: {subset: metrics}}``. Output: *table dicts* (plain JSON-able data)
that :func:`markdown_table` renders, CED curves as PNG (Fig. 9, 11, 13), and
:func:`write_report`, which writes ``<name>.json``, ``<name>.md`` and the PNGs.

A table keeps the paper's orientation: one row per method (or per threshold
pair, Table IX), one column per (subset, metric). Where the paper reports a
number for the same row and column, the Markdown puts a "paper" column right
after ours. Rows are matched to the paper's rows by name (e.g. our "MSM", or the
ablation's "ST-GAN + HG"); ``paper_rows`` maps other names.

Number formats in the Markdown: NMEs and failure rates are percentages with 2
decimals, AUC a fraction with 4 decimals (as printed in the paper), other
fractions (precision, recall, F1, scores) 3 decimals, counts integers; a value
that is missing or NaN prints as "-".

The paper's numbers (inter-ocular NME unless said otherwise; FR and NME in %):

  Table III, 300-W      Common  Challenge  Fullset
    MSM inter-pupil      3.74     6.97      4.38
    MSM inter-ocular     2.70     4.83      3.11
  Table IV, 300-W private: MSM NME 3.81, FR@0.08 1.50, AUC@0.08 0.5262
  Table V, COFW-68 test: MSM inter-pupil 5.50, inter-ocular 3.90, FR@0.08 0
  Table VI, WFLW    Full  Pose   Expr.  Illum.  Make-up  Occl.  Blur
    MSM NME         4.60  8.01   4.81   4.58    4.47     5.85   5.28
    MSM FR@0.1      4.28  16.87  2.87   3.72    4.37     9.36   5.95
    MSM AUC@0.1   0.5671 0.3091 0.5478 0.5725  0.5711  0.4849 0.5073
  Table VII (WFLW NME) and VIII (COFW NME, FR) ablations, Table IX (COFW NME
  per reliability-threshold pair, inter-pupil: it equals Table V's 5.50 at the
  chosen K = 0.4 / 0.6): see ``_PAPER_REFERENCE`` below, the one copy in code.
"""

from __future__ import annotations

import copy
import math
import os
import re
from typing import Iterable, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from msm_jax import files
from msm_jax.core import metrics
from msm_jax.eval.subset_metrics import TABLE_IX_THRESHOLD_PAIRS, threshold_pair_label

WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
# Table VII / VIII rows, in the paper's order; the full MSM is "ST-GAN + HG + SR".
ABLATION_METHODS = ("Res-50", "ST-GAN + Res-50", "HG", "ST-GAN + HG", "HG + SR", "ST-GAN + HG + SR")
MEAN_SHAPE_METHOD = "Mean shape"

SUBSET_LABELS = {
  "common": "Common",
  "challenge": "Challenge",
  "full": "Fullset",
  "private": "Private",
  "test": "Test",
  "pose": "Pose",
  "expression": "Expression",
  "illumination": "Illumination",
  "makeup": "Make-up",
  "occlusion": "Occlusion",
  "blur": "Blur",
}
_NORM_LABELS = {"inter_ocular": "inter-ocular", "inter_pupil": "inter-pupil", "box": "box"}
_FIXED_METRIC_LABELS = {
  "count": "Faces",
  "failure_rate": "Failure (%)",
  "auc": "AUC",
  "occluded_fraction": "Occluded fraction",
  "mean_score_occluded": "Score, occluded",
  "mean_score_visible": "Score, visible",
  "unreliable_precision": "Precision",
  "unreliable_recall": "Recall",
  "unreliable_f1": "F1",
}


def _wflw_row(nme, failure=None, auc_values=None):
  """Per-subset numbers of one WFLW row (full set, then the six attributes)."""
  rows = {}
  for i, subset in enumerate(("full",) + WFLW_ATTRIBUTES):
    rows[subset] = {"nme_inter_ocular": nme[i]}
    if failure is not None:
      rows[subset].update(failure_rate=failure[i], auc=auc_values[i])
  return rows


def _cofw_row(nme_inter_ocular, failure_rate):
  return {"test": {"nme_inter_ocular": nme_inter_ocular, "failure_rate": failure_rate}}


_MSM_WFLW_NME = (4.60, 8.01, 4.81, 4.58, 4.47, 5.85, 5.28)
_TABLE_IX_NMES = (5.59, 5.57, 5.58, 5.65, 5.55, 5.54, 5.50, 5.61, 5.62, 5.60, 5.63, 5.66)

_PAPER_REFERENCE = {
  "300w": {
    "MSM": {  # Tables III and IV
      "common": {"nme_inter_pupil": 3.74, "nme_inter_ocular": 2.70},
      "challenge": {"nme_inter_pupil": 6.97, "nme_inter_ocular": 4.83},
      "full": {"nme_inter_pupil": 4.38, "nme_inter_ocular": 3.11},
      "private": {"nme_inter_ocular": 3.81, "failure_rate": 1.50, "auc": 0.5262},
    }
  },
  "cofw": {  # Table V (MSM) and Table VIII (ablation); COFW-68 test set
    "MSM": {"test": {"nme_inter_pupil": 5.50, "nme_inter_ocular": 3.90, "failure_rate": 0.0}},
    "Res-50": _cofw_row(4.76, 4.54),
    "ST-GAN + Res-50": _cofw_row(4.23, 3.81),
    "HG": _cofw_row(4.64, 6.52),
    "ST-GAN + HG": _cofw_row(4.34, 5.23),
    "HG + SR": _cofw_row(4.10, 0.99),
    "ST-GAN + HG + SR": _cofw_row(3.95, 0.99),
  },
  "wflw": {  # Table VI (MSM) and Table VII (ablation)
    "MSM": _wflw_row(
      _MSM_WFLW_NME,
      (4.28, 16.87, 2.87, 3.72, 4.37, 9.36, 5.95),
      (0.5671, 0.3091, 0.5478, 0.5725, 0.5711, 0.4849, 0.5073),
    ),
    "Res-50": _wflw_row((5.73, 11.28, 6.13, 5.65, 5.80, 6.98, 6.51)),
    "ST-GAN + Res-50": _wflw_row((5.42, 10.65, 6.00, 5.31, 5.39, 6.57, 6.23)),
    "HG": _wflw_row((5.41, 10.03, 5.56, 5.54, 6.03, 7.00, 6.25)),
    "ST-GAN + HG": _wflw_row((4.81, 8.49, 5.09, 4.75, 4.70, 6.16, 5.51)),
    "HG + SR": _wflw_row((5.17, 9.49, 5.42, 5.38, 5.74, 6.60, 6.08)),
    "ST-GAN + HG + SR": _wflw_row(_MSM_WFLW_NME),
  },  # the full MSM of Table VI
  "cofw_thresholds": {  # Table IX, rows named by evaluation.threshold_pair_label
    threshold_pair_label(*pair): {"test": {"nme_inter_pupil": value}}
    for pair, value in zip(TABLE_IX_THRESHOLD_PAIRS, _TABLE_IX_NMES)
  },
}


def paper_reference(dataset: str) -> dict:
  """The paper's numbers as ``{method: {subset: metrics}}`` (a fresh copy).

  Args:
    dataset: "300w" (Tables III, IV), "cofw" (V, VIII), "wflw" (VI, VII) or
      "cofw_thresholds" (IX). Subsets are named as in the data readers: 300-W
      "common" / "challenge" / "full" / "private", COFW "test", WFLW "full" and
      the six attributes.
  """
  if dataset not in _PAPER_REFERENCE:
    raise ValueError(
      f"paper_reference: unknown dataset {dataset!r}; expected one of {sorted(_PAPER_REFERENCE)}"
    )
  return copy.deepcopy(_PAPER_REFERENCE[dataset])


def metric_label(metric: str) -> str:
  """Human name of a metric key: "nme_visible_box" -> "NME visible, box (%)"."""
  if metric in _FIXED_METRIC_LABELS:
    return _FIXED_METRIC_LABELS[metric]
  match = re.fullmatch(r"nme_(?:(occluded|visible)_)?(\w+)", metric)
  if match:
    which, norm = match.groups()
    prefix = f"NME {which}, " if which else "NME "
    return f"{prefix}{_NORM_LABELS.get(norm, norm)} (%)"
  return metric


def format_value(metric: str, value) -> str:
  """A metric value as the Markdown shows it (see the module docstring)."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  if isinstance(value, str):
    return value
  if metric == "count" or metric.endswith(("_positives", "_negatives")):
    return str(int(value))
  if metric.startswith("nme_") or metric == "failure_rate":
    return f"{value:.2f}"
  if metric == "auc":
    return f"{value:.4f}"
  return f"{value:.3f}"


def _json_number(value):
  """Plain float / int / str for JSON; NaN and None become None."""
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f"metric values must be numbers, got the boolean {value!r}")
  if isinstance(value, (int, np.integer)):
    return int(value)
  try:
    value = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"metric values must be numbers, got {value!r}") from None
  return None if math.isnan(value) else value


def _as_column(column) -> dict:
  if isinstance(column, Mapping):
    subset, metric, label = column["subset"], column["metric"], column.get("label")
  elif isinstance(column, (tuple, list)) and len(column) in (2, 3):
    subset, metric, label = (tuple(column) + (None,))[:3]
  else:
    raise ValueError(f"results_table: a column is (subset, metric[, label]), got {column!r}")
  if label is None:
    label = f"{SUBSET_LABELS.get(subset, subset)}: {metric_label(metric)}"
  return {"subset": subset, "metric": metric, "label": label}


def results_table(
  rows: Mapping[str, Mapping[str, Mapping]],
  columns: Iterable,
  title: str = "",
  row_header: str = "Method",
  paper: Mapping[str, Mapping[str, Mapping]] | None = None,
) -> dict:
  """A table: one row per method, one column per (subset, metric).

  Args:
    rows: ``{method: {subset: metrics}}``; a row may miss a subset or metric
      (shown as "-"), but every column must exist in at least one row.
    columns: (subset, metric) or (subset, metric, label) tuples, or dicts with
      those keys; the default label is "<Subset>: <metric label>".
    title: the table's heading.
    row_header: header of the first column ("Method", or Table IX's thresholds).
    paper: reference numbers ``{method: {subset: metrics}}`` keyed by *our* row
      names (see :func:`paper_reference`).

  Returns:
    JSON-able ``{"title", "row_header", "columns": [{"subset", "metric",
    "label"}], "rows": [{"name", "values": [...], "paper": [...] or None}]}``,
    missing or NaN values as None.
  """
  if not rows:
    raise ValueError("results_table: rows is empty")
  columns = [_as_column(column) for column in columns]
  if not columns:
    raise ValueError("results_table: columns is empty")
  for column in columns:
    subset, metric = column["subset"], column["metric"]
    if not any(metric in methods.get(subset, {}) for methods in rows.values()):
      present = sorted({s for methods in rows.values() for s in methods})
      raise ValueError(
        f"results_table: no row has metric {metric!r} for subset "
        f"{subset!r} (subsets present: {present})"
      )
  paper = paper or {}
  unknown = set(paper) - set(rows)
  if unknown:
    raise ValueError(
      f"results_table: paper references for rows that do not exist: {sorted(unknown)}"
    )

  def lookup(source, column):
    return _json_number(source.get(column["subset"], {}).get(column["metric"]))

  table_rows = []
  for name, by_subset in rows.items():
    reference = paper.get(name)
    table_rows.append(
      {
        "name": name,
        "values": [lookup(by_subset, column) for column in columns],
        "paper": None if reference is None else [lookup(reference, c) for c in columns],
      }
    )
  return {"title": title, "row_header": row_header, "columns": columns, "rows": table_rows}


def markdown_table(table: Mapping) -> str:
  """Renders a table dict (from :func:`results_table` or its JSON) as Markdown.

  A "paper" column follows each column for which some row has a reference.
  """
  columns = table["columns"]
  with_paper = [
    any(row["paper"] is not None and row["paper"][i] is not None for row in table["rows"])
    for i in range(len(columns))
  ]
  header, align = [table["row_header"]], [":---"]
  for column, paper_column in zip(columns, with_paper):
    header += [column["label"]] + (["paper"] if paper_column else [])
    align += ["---:"] * (2 if paper_column else 1)
  lines = [f"### {table['title']}", ""] if table["title"] else []
  lines += [_markdown_row(header), _markdown_row(align)]
  for row in table["rows"]:
    cells = [row["name"]]
    for i, (column, paper_column) in enumerate(zip(columns, with_paper)):
      cells.append(format_value(column["metric"], row["values"][i]))
      if paper_column:
        reference = None if row["paper"] is None else row["paper"][i]
        cells.append(format_value(column["metric"], reference))
    lines.append(_markdown_row(cells))
  return "\n".join(lines) + "\n"


def _markdown_row(cells: list[str]) -> str:
  # A "|" inside a name would split the cell.
  return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


# --- The paper's layouts -------------------------------------------------------


def _references_for(
  dataset: str,
  rows: Mapping,
  paper_rows: Mapping[str, str] | None,
  subset_names: Mapping[str, str] | None = None,
) -> dict:
  """Paper numbers keyed by our row names (and our subset names).

  ``paper_rows`` maps our row name -> the paper's; by default a row gets the
  paper's row of the same name. ``subset_names`` maps paper subset -> ours.
  """
  reference = paper_reference(dataset)
  if paper_rows is None:
    paper_rows = {name: name for name in rows if name in reference}
  matched = {}
  for ours, theirs in paper_rows.items():
    if ours not in rows:
      raise ValueError(f"paper_rows: {ours!r} is not a row (rows: {list(rows)})")
    if theirs not in reference:
      raise ValueError(
        f"paper_rows: the paper has no row {theirs!r} for {dataset!r} (rows: {sorted(reference)})"
      )
    renames = subset_names or {}
    matched[ours] = {
      renames.get(subset, subset): values for subset, values in reference[theirs].items()
    }
  return matched


def _present(rows: Mapping, columns: list[tuple]) -> list[tuple]:
  """The columns that at least one row has: evaluations may skip subsets."""
  return [
    column
    for column in columns
    if any(column[1] in by_subset.get(column[0], {}) for by_subset in rows.values())
  ]


def _failure_threshold(rows: Mapping, subsets: Iterable[str]) -> str:
  """The one failure threshold the rows were computed with, for labels ("0.08")."""
  thresholds = {
    by_subset[subset]["failure_threshold"]
    for by_subset in rows.values()
    for subset in subsets
    if "failure_threshold" in by_subset.get(subset, {})
  }
  if len(thresholds) > 1:
    raise ValueError(
      f"rows mix failure thresholds {sorted(thresholds)}; a table compares methods at one threshold"
    )
  return f"{thresholds.pop():g}" if thresholds else "?"


class NoTableError(ValueError):
  """None of the evaluated subsets is one of a paper table's."""


def _tables(rows, specs, dataset, paper_rows, subset_names=None, row_header="Method"):
  """Builds each (key, title, columns) spec whose columns exist in ``rows``."""
  paper = _references_for(dataset, rows, paper_rows, subset_names)
  tables = {}
  for key, title, columns in specs:
    columns = _present(rows, columns)
    if columns:
      tables[key] = results_table(rows, columns, title, row_header, paper)
  if not tables:
    raise NoTableError(
      f"no row has any of the subsets / metrics of the {dataset!r} "
      f"tables (rows have: { {m: sorted(s) for m, s in rows.items()} })"
    )
  return tables


def tables_300w(
  rows: Mapping[str, Mapping[str, Mapping]], paper_rows: Mapping[str, str] | None = None
) -> dict[str, dict]:
  """Table III (common / challenge / full, inter-pupil and inter-ocular NME) and
  Table IV (private set: NME, failure rate, AUC), for the subsets present.

  Returns ``{"300w_inter_pupil", "300w_inter_ocular", "300w_private": table}``.
  """
  subsets = ("common", "challenge", "full")
  threshold = _failure_threshold(rows, ["private"])
  specs = [
    (
      f"300w_{norm}",
      f"Table III: NME (%) on 300-W, {_NORM_LABELS[norm]}",
      [(s, f"nme_{norm}", SUBSET_LABELS[s]) for s in subsets],
    )
    for norm in ("inter_pupil", "inter_ocular")
  ]
  specs.append(
    (
      "300w_private",
      "Table IV: 300-W private test set (inter-ocular)",
      [
        ("private", "nme_inter_ocular", "NME (%)"),
        ("private", "failure_rate", f"Failure@{threshold} (%)"),
        ("private", "auc", f"AUC@{threshold}"),
      ],
    )
  )
  return _tables(rows, specs, "300w", paper_rows)


def tables_cofw(
  rows: Mapping[str, Mapping[str, Mapping]],
  subset: str = "test",
  paper_rows: Mapping[str, str] | None = None,
) -> dict[str, dict]:
  """Table V: COFW-68 inter-pupil and inter-ocular NME and failure rate.

  Returns ``{"cofw": table}``.
  """
  threshold = _failure_threshold(rows, [subset])
  columns = [
    (subset, "nme_inter_pupil", "NME inter-pupil (%)"),
    (subset, "nme_inter_ocular", "NME inter-ocular (%)"),
    (subset, "failure_rate", f"Failure@{threshold} (%)"),
  ]
  return _tables(rows, [("cofw", "Table V: COFW", columns)], "cofw", paper_rows, {"test": subset})


def tables_wflw(
  rows: Mapping[str, Mapping[str, Mapping]],
  fullset: str = "full",
  paper_rows: Mapping[str, str] | None = None,
) -> dict[str, dict]:
  """Table VI: WFLW full set and the six attribute subsets; NME, FR, AUC.

  Args:
    rows: ``{method: {subset: metrics}}``, WFLW subsets named as the reader's
      (``fullset`` and ``WFLW_ATTRIBUTES``).
    fullset: our name of the whole test set ("full"; configs/wflw.py says "test").

  Returns ``{"wflw_nme", "wflw_failure", "wflw_auc": table}``.
  """
  subsets = (fullset,) + WFLW_ATTRIBUTES
  labels = ("Fullset",) + tuple(SUBSET_LABELS[a] for a in WFLW_ATTRIBUTES)
  threshold = _failure_threshold(rows, subsets)
  specs = [
    (
      f"wflw_{key}",
      f"Table VI: WFLW, {title}",
      [(s, metric, label) for s, label in zip(subsets, labels)],
    )
    for key, metric, title in (
      ("nme", "nme_inter_ocular", "NME (%), inter-ocular"),
      ("failure", "failure_rate", f"failure rate (%) at NME >= {threshold}"),
      ("auc", "auc", f"AUC@{threshold}"),
    )
  ]
  return _tables(rows, specs, "wflw", paper_rows, {"full": fullset})


def ablation_tables(
  rows: Mapping[str, Mapping[str, Mapping]], dataset: str, subset: str = "full"
) -> dict[str, dict]:
  """Table VII (WFLW, NME per subset) or Table VIII (COFW, NME and FR).

  Rows are put in the paper's order (``ABLATION_METHODS``: Res-50, ST-GAN +
  Res-50, HG, ST-GAN + HG, HG + SR, ST-GAN + HG + SR), the ones given only;
  any other row (e.g. ``MEAN_SHAPE_METHOD``) follows in the order given.

  Args:
    rows: ``{method: {subset: metrics}}``.
    dataset: "wflw" or "cofw".
    subset: our name of WFLW's full set or of COFW's test set ("full" / "test").

  Returns ``{"wflw_ablation" or "cofw_ablation": table}``.
  """
  ordered = {name: rows[name] for name in ABLATION_METHODS if name in rows}
  ordered.update({name: value for name, value in rows.items() if name not in ordered})
  if dataset == "wflw":
    subsets = (subset,) + WFLW_ATTRIBUTES
    labels = ("Fullset",) + tuple(SUBSET_LABELS[a] for a in WFLW_ATTRIBUTES)
    columns = [(s, "nme_inter_ocular", label) for s, label in zip(subsets, labels)]
    spec = ("wflw_ablation", "Table VII: WFLW ablation, NME (%), inter-ocular", columns)
    return _tables(ordered, [spec], "wflw", None, {"full": subset})
  if dataset == "cofw":
    threshold = _failure_threshold(ordered, [subset])
    columns = [
      (subset, "nme_inter_ocular", "NME inter-ocular (%)"),
      (subset, "failure_rate", f"Failure@{threshold} (%)"),
    ]
    spec = ("cofw_ablation", "Table VIII: COFW ablation", columns)
    # Table V's "MSM" row differs from Table VIII's full model (3.90 vs 3.95):
    # only the ablation's own rows are referenced here.
    paper_rows = {name: name for name in ordered if name in ABLATION_METHODS}
    return _tables(ordered, [spec], "cofw", paper_rows, {"test": subset})
  raise ValueError(f"ablation_tables: dataset must be 'wflw' or 'cofw', got {dataset!r}")


def occlusion_table(
  rows: Mapping[str, Mapping[str, Mapping]], subset: str, norm: str = "inter_ocular"
) -> dict[str, dict]:
  """NME on occluded vs visible landmarks and how well "unreliable" finds them.

  Not a table of the paper: it checks its claim (Sec. III-B, Fig. 15) that low
  Eq. 9 scores mark occluded points, on COFW or synthetic occluders.

  Returns ``{"occlusion_<subset>": table}``.
  """
  metric_names = (
    f"nme_{norm}",
    f"nme_occluded_{norm}",
    f"nme_visible_{norm}",
    "occluded_fraction",
    "mean_score_occluded",
    "mean_score_visible",
    "unreliable_precision",
    "unreliable_recall",
    "unreliable_f1",
  )
  columns = _present(rows, [(subset, metric) for metric in metric_names])
  if not columns:
    raise ValueError(
      f"occlusion_table: no row has occlusion metrics for subset "
      f"{subset!r}; give SubsetPredictions.occluded"
    )
  title = (
    f"Occluded vs visible landmarks, {SUBSET_LABELS.get(subset, subset)} "
    "(precision / recall / F1: unreliable as a detector of occluded)"
  )
  labelled = [(s, metric, metric_label(metric)) for s, metric in columns]
  return {f"occlusion_{subset}": results_table(rows, labelled, title)}


def threshold_table(
  sweep: Mapping[str, Mapping[str, Mapping]],
  subset: str = "test",
  norms: Iterable[str] = ("inter_pupil", "inter_ocular"),
  with_paper: bool = True,
) -> dict[str, dict]:
  """Table IX: NME per (contour K, facial-feature K) pair.

  Args:
    sweep: the output of ``evaluation.threshold_sweep``.
    subset: the swept subset's name (COFW's test set in the paper).
    norms: NME columns; the paper's numbers are inter-pupil.
    with_paper: show the paper's Table IX beside ours (COFW only).

  Returns ``{"thresholds": table}``.
  """
  columns = [(subset, f"nme_{norm}", metric_label(f"nme_{norm}")) for norm in norms]
  paper = _references_for("cofw_thresholds", sweep, None, {"test": subset}) if with_paper else None
  return {
    "thresholds": results_table(
      sweep, columns, "Table IX: reliability thresholds K", "K contour / features", paper
    )
  }


# --- CED plots and report files ------------------------------------------------


def plot_ced(
  curves: Mapping[str, Iterable[float]],
  threshold: float,
  path,
  title: str = "",
  size_px: tuple[int, int] = (640, 480),
) -> str:
  """Cumulative error distribution, one line per method (Fig. 9, 11, 13).

  Args:
    curves: ``{method: per-face NMEs}`` (fractions, e.g. ``evaluation.subset_nmes``).
    threshold: right end of the x axis (the failure threshold); AUC@threshold
      appears in the legend.
    path: the PNG to write.
    title: the plot's title.
    size_px: (width, height) of the PNG in pixels.

  Returns:
    ``path`` as a string.
  """
  if not curves:
    raise ValueError("plot_ced: curves is empty")
  dpi = 100
  # A bare Figure on the Agg canvas: no pyplot global state, no backend switch.
  figure = Figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  for method, nmes in curves.items():
    x, y = metrics.ced_curve(nmes, threshold)
    axes.plot(100.0 * x, y, label=f"{method} (AUC {metrics.auc(nmes, threshold):.4f})")
  axes.set_xlim(0.0, 100.0 * threshold)
  axes.set_ylim(0.0, 1.0)
  axes.set_xlabel("NME (%)")
  axes.set_ylabel("Fraction of faces")
  axes.set_title(title)
  axes.grid(True, alpha=0.3)
  axes.legend(loc="lower right")
  path = os.fspath(path)
  with files.atomic_write(path, "wb") as file:
    figure.savefig(file, dpi=dpi, format="png")
  return path


def file_stem(text: str) -> str:
  """A subset or curve name as a safe file-name part ("helen/trainset" -> "helen_trainset")."""
  return re.sub(r"[^\w-]+", "_", text).strip("_") or "curve"


def write_report(
  out_dir,
  name: str,
  tables: Mapping[str, Mapping],
  curves: Mapping[str, Mapping[str, Iterable[float]]] | None = None,
  threshold: float = 0.08,
) -> str:
  """Writes ``<name>.json``, ``<name>.md`` and ``<name>_ced_<key>.png`` files.

  Args:
    out_dir: folder (created if missing).
    name: report name, letters / digits / "_" / "-" / "." only.
    tables: ``{key: table dict}`` from the builders above, in display order.
    curves: ``{key: {method: per-face NMEs}}``, one CED plot per key (e.g. per
      subset); the JSON keeps the NMEs so plots can be redrawn.
    threshold: failure threshold of the CED plots (0.08; WFLW 0.1).

  Returns:
    The Markdown text (what ``<name>.md`` holds).
  """
  if not re.fullmatch(r"[\w.-]+", name):
    raise ValueError(
      f"write_report: name {name!r} must be a plain file name (letters, digits, '_', '-', '.')"
    )
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  sections = [f"# {name}\n"] + [markdown_table(table) for table in tables.values()]
  ced = {}
  for key, methods in (curves or {}).items():
    png = f"{name}_ced_{file_stem(key)}.png"
    title = f"CED, {SUBSET_LABELS.get(key, key)}"
    plot_ced(methods, threshold, os.path.join(out_dir, png), title)
    sections.append(f"### {title}\n\n![{title}]({png})\n")
    ced[key] = {
      "threshold": threshold,
      "png": png,
      "methods": {
        method: {
          "auc": metrics.auc(nmes, threshold),
          "failure_rate": 100.0 * metrics.failure_rate(nmes, threshold),
          "nmes": [float(v) for v in np.asarray(nmes, dtype=np.float64)],
        }
        for method, nmes in methods.items()
      },
    }
  markdown = "\n".join(sections)
  report = {"name": name, "tables": dict(tables), "ced": ced}
  # allow_nan=False: strict JSON, so tables must hold None, never NaN.
  files.write_json(os.path.join(out_dir, f"{name}.json"), report, indent=1, allow_nan=False)
  files.write_text(os.path.join(out_dir, f"{name}.md"), markdown)
  return markdown

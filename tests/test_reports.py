"""Tests for msm_jax.eval.reports: table dicts, Markdown, paper references, CED PNGs, files.

Expected Markdown lines are written out in full; the paper's numbers are checked
against the printed tables (Tables III-IX of the paper).
"""

import json
import math

import numpy as np
import pytest
from PIL import Image

from msm_jax.eval import reports, subset_metrics


def _metrics(nme_io, nme_ip=None, failure=None, auc=None, threshold=0.08):
  values = {"count": 10, "nme_inter_ocular": nme_io, "failure_threshold": threshold}
  for key, value in (("nme_inter_pupil", nme_ip), ("failure_rate", failure), ("auc", auc)):
    if value is not None:
      values[key] = value
  return values


def test_markdown_formats_values_as_documented():
  rows = {
    "A": {"test": _metrics(3.14159, failure=0.0, auc=0.526249)},
    "B": {"test": _metrics(float("nan"), failure=12.345, auc=np.float64(0.1))},
  }
  table = reports.results_table(
    rows,
    [
      ("test", "nme_inter_ocular"),
      ("test", "failure_rate", "FR (%)"),
      ("test", "auc", "AUC"),
      ("test", "count", "N"),
    ],
    title="T",
  )
  # NME / FR: 2 decimals; AUC: 4 decimals; counts: integers; NaN: "-".
  assert reports.markdown_table(table) == (
    "### T\n\n"
    "| Method | Test: NME inter-ocular (%) | FR (%) | AUC | N |\n"
    "| :--- | ---: | ---: | ---: | ---: |\n"
    "| A | 3.14 | 0.00 | 0.5262 | 10 |\n"
    "| B | - | 12.35 | 0.1000 | 10 |\n"
  )
  assert table["rows"][1]["values"][0] is None  # NaN is stored as None
  assert reports.format_value("unreliable_recall", 0.5) == "0.500"
  assert reports.format_value("failure_norm", "inter_ocular") == "inter_ocular"


def test_300w_tables_put_the_paper_beside_ours():
  rows = {
    "MSM": {
      "common": _metrics(2.75, 3.801),
      "challenge": _metrics(4.9, 7.0),
      "full": _metrics(3.2, 4.5),
    },
    "Mean shape": {"common": _metrics(17.8, 25.0)},
  }
  tables = reports.tables_300w(rows)
  assert list(tables) == ["300w_inter_pupil", "300w_inter_ocular"]  # no private rows
  markdown = reports.markdown_table(tables["300w_inter_ocular"])
  assert "| Method | Common | paper | Challenge | paper | Fullset | paper |" in markdown
  assert "| MSM | 2.75 | 2.70 | 4.90 | 4.83 | 3.20 | 3.11 |" in markdown
  assert "| Mean shape | 17.80 | - | - | - | - | - |" in markdown
  assert "| MSM | 3.80 | 3.74 | 7.00 | 6.97 | 4.50 | 4.38 |" in reports.markdown_table(
    tables["300w_inter_pupil"]
  )
  # Another name for our row, mapped explicitly to the paper's "MSM".
  renamed = reports.tables_300w({"ours": rows["MSM"]}, paper_rows={"ours": "MSM"})
  assert "| ours | 2.75 | 2.70 |" in reports.markdown_table(renamed["300w_inter_ocular"])


def test_300w_private_table_labels_the_threshold():
  rows = {"MSM": {"private": _metrics(3.9, failure=1.5, auc=0.52)}}
  markdown = reports.markdown_table(reports.tables_300w(rows)["300w_private"])
  assert "| Method | NME (%) | paper | Failure@0.08 (%) | paper | AUC@0.08 | paper |" in markdown
  assert "| MSM | 3.90 | 3.81 | 1.50 | 1.50 | 0.5200 | 0.5262 |" in markdown


def test_wflw_tables_map_the_fullset_name_and_reject_mixed_thresholds():
  subsets = ("test",) + reports.WFLW_ATTRIBUTES
  rows = {"MSM": {s: _metrics(5.0, failure=4.0, auc=0.5, threshold=0.1) for s in subsets}}
  tables = reports.tables_wflw(rows, fullset="test")
  assert list(tables) == ["wflw_nme", "wflw_failure", "wflw_auc"]
  assert tables["wflw_failure"]["title"].endswith("at NME >= 0.1")
  # Paper: NME 4.60 8.01 4.81 4.58 4.47 5.85 5.28 (Table VI).
  assert tables["wflw_nme"]["rows"][0]["paper"] == [4.60, 8.01, 4.81, 4.58, 4.47, 5.85, 5.28]
  assert tables["wflw_auc"]["rows"][0]["paper"][1] == 0.3091  # pose
  rows["MSM"]["blur"]["failure_threshold"] = 0.08
  with pytest.raises(ValueError, match="mix failure thresholds"):
    reports.tables_wflw(rows, fullset="test")


def test_cofw_and_ablation_tables():
  rows = {
    "HG + SR": {"test": _metrics(4.2, failure=1.0)},
    "Mean shape": {"test": _metrics(15.0, failure=90.0)},
    "HG": {"test": _metrics(4.7, failure=6.0)},
    "MSM": {"test": _metrics(4.0, 5.6, failure=0.0)},
  }
  table = reports.ablation_tables(rows, "cofw", subset="test")["cofw_ablation"]
  # Paper order first (HG before HG + SR), the rest as given.
  assert [row["name"] for row in table["rows"]] == ["HG", "HG + SR", "Mean shape", "MSM"]
  markdown = reports.markdown_table(table)
  assert "| HG | 4.70 | 4.64 | 6.00 | 6.52 |" in markdown  # Table VIII
  assert "| MSM | 4.00 | - | 0.00 | - |" in markdown  # Table V's row is not VIII's
  cofw = reports.markdown_table(reports.tables_cofw(rows)["cofw"])
  assert "| MSM | 5.60 | 5.50 | 4.00 | 3.90 | 0.00 | 0.00 |" in cofw  # Table V
  wflw_rows = {"ST-GAN + HG": {"full": _metrics(4.9)}}
  wflw = reports.ablation_tables(wflw_rows, "wflw")["wflw_ablation"]
  # Only the full set was evaluated: one column, Table VII's 4.81 beside it.
  assert [c["subset"] for c in wflw["columns"]] == ["full"]
  assert wflw["rows"][0]["paper"] == [4.81]
  wflw_rows["ST-GAN + HG"]["pose"] = _metrics(9.0)
  wflw = reports.ablation_tables(wflw_rows, "wflw")["wflw_ablation"]
  assert wflw["rows"][0]["paper"] == [4.81, 8.49]


def test_threshold_table_from_a_sweep():
  gt = np.zeros((1, 68, 2))
  gt[0, 36:42] = [(40, 50), (46, 46), (54, 46), (60, 50), (54, 54), (46, 54)]
  gt[0, 42:48] = gt[0, 36:42] + (60, 0)  # inter-pupil 60, inter-ocular 80

  def predict_with_thresholds(contour, feature):
    return subset_metrics.SubsetPredictions("test", gt + (6 * feature, 0.0), gt)

  sweep = subset_metrics.threshold_sweep(predict_with_thresholds, "300w")
  markdown = reports.markdown_table(reports.threshold_table(sweep)["thresholds"])
  # (0.4, 0.6): 3.6 px error -> inter-pupil 3.6 / 60 = 6.00 %, inter-ocular 4.50 %;
  # the paper's Table IX says 5.50 (inter-pupil) for this pair.
  assert "| K contour / features | NME inter-pupil (%) | paper | NME inter-ocular (%) |" in markdown
  assert "| 0.4 / 0.6 | 6.00 | 5.50 | 4.50 |" in markdown
  assert "| 0.3 / 0.4 | 4.00 | 5.59 | 3.00 |" in markdown
  plain = reports.threshold_table(sweep, with_paper=False)["thresholds"]
  assert "paper" not in reports.markdown_table(plain)


def test_paper_reference_numbers():
  assert reports.paper_reference("300w")["MSM"]["challenge"] == {
    "nme_inter_pupil": 6.97,
    "nme_inter_ocular": 4.83,
  }
  assert reports.paper_reference("300w")["MSM"]["private"]["auc"] == 0.5262
  wflw = reports.paper_reference("wflw")
  assert wflw["MSM"]["pose"] == {"nme_inter_ocular": 8.01, "failure_rate": 16.87, "auc": 0.3091}
  assert wflw["Res-50"]["occlusion"] == {"nme_inter_ocular": 6.98}
  # The full MSM of Table VI is the ablation's ST-GAN + HG + SR of Table VII.
  assert all(
    wflw["MSM"][s]["nme_inter_ocular"] == wflw["ST-GAN + HG + SR"][s]["nme_inter_ocular"]
    for s in wflw["MSM"]
  )
  sweep = reports.paper_reference("cofw_thresholds")
  best = min(sweep, key=lambda label: sweep[label]["test"]["nme_inter_pupil"])
  assert best == "0.4 / 0.6" and sweep[best]["test"]["nme_inter_pupil"] == 5.50
  # A fresh copy each time: callers cannot corrupt the reference.
  wflw["MSM"]["pose"]["auc"] = 0.0
  assert reports.paper_reference("wflw")["MSM"]["pose"]["auc"] == 0.3091
  with pytest.raises(ValueError, match="unknown dataset 'aflw'"):
    reports.paper_reference("aflw")


def test_json_round_trip_renders_the_same_markdown():
  rows = {"MSM": {"common": _metrics(2.75, float("nan")), "full": _metrics(3.2, 4.5)}}
  table = reports.tables_300w(rows)["300w_inter_pupil"]
  text = json.dumps(table, allow_nan=False)  # strict JSON: NaN was stored as None
  restored = json.loads(text)
  assert restored == table
  assert reports.markdown_table(restored) == reports.markdown_table(table)
  assert "| MSM | - | 3.74 | 4.50 | 4.38 |" in reports.markdown_table(restored)


def test_results_table_errors_are_clear():
  rows = {"MSM": {"test": _metrics(4.0)}}
  with pytest.raises(ValueError, match=r"no row has metric 'auc' for subset 'test'"):
    reports.results_table(rows, [("test", "auc")])
  with pytest.raises(ValueError, match=r"subsets present: \['test'\]"):
    reports.results_table(rows, [("full", "nme_inter_ocular")])
  with pytest.raises(ValueError, match="rows that do not exist"):
    reports.results_table(rows, [("test", "nme_inter_ocular")], paper={"HG": {"test": {}}})
  with pytest.raises(ValueError, match="the paper has no row 'MSN'"):
    reports.tables_cofw(rows, paper_rows={"MSM": "MSN"})
  with pytest.raises(ValueError, match="no row has any"):
    reports.tables_wflw(rows)


def _png(path):
  with Image.open(path) as image:
    image.load()
    return image.format, image.size, np.asarray(image.convert("L"))


def test_plot_ced_writes_a_png_of_the_requested_size(tmp_path):
  rng = np.random.default_rng(0)
  curves = {"MSM": rng.uniform(0.0, 0.06, 50), "HG": rng.uniform(0.0, 0.1, 50)}
  path = reports.plot_ced(curves, 0.08, tmp_path / "ced.png", "CED")
  image_format, size, pixels = _png(path)
  assert (image_format, size) == ("PNG", (640, 480))
  assert pixels.min() < 100 and pixels.max() == 255  # dark lines on a white page
  _, small, _ = _png(reports.plot_ced(curves, 0.1, tmp_path / "s.png", size_px=(320, 200)))
  assert small == (320, 200)


def test_write_report_files(tmp_path):
  rows = {
    "MSM": {"test": {**_metrics(4.0, 5.6, failure=0.0), "nme_occluded_inter_ocular": float("nan")}}
  }
  tables = {**reports.tables_cofw(rows), **reports.occlusion_table(rows, "test")}
  nmes = np.array([0.02, 0.04, 0.10])
  markdown = reports.write_report(tmp_path / "out", "cofw_eval", tables, {"test": {"MSM": nmes}})
  out = tmp_path / "out"
  assert (out / "cofw_eval.md").read_text() == markdown
  assert markdown.startswith("# cofw_eval\n")
  assert "| MSM | 5.60 | 5.50 | 4.00 | 3.90 | 0.00 | 0.00 |" in markdown
  assert "![CED, Test](cofw_eval_ced_test.png)" in markdown
  assert _png(out / "cofw_eval_ced_test.png")[:2] == ("PNG", (640, 480))
  report = json.loads((out / "cofw_eval.json").read_text())
  assert report["tables"]["cofw"] == tables["cofw"]
  ced = report["ced"]["test"]
  # Same three faces as metrics' AUC golden test: AUC 5 / 12, 1 of 3 fails.
  assert ced["methods"]["MSM"]["auc"] == pytest.approx(5 / 12)
  assert ced["methods"]["MSM"]["failure_rate"] == pytest.approx(100 / 3)
  assert ced["methods"]["MSM"]["nmes"] == [0.02, 0.04, 0.10]
  assert not math.isnan(ced["threshold"])
  with pytest.raises(ValueError, match="plain file name"):
    reports.write_report(tmp_path, "../escape", tables)


def test_markdown_escapes_pipes_and_rejects_non_numbers():
  rows = {"a|b": {"test": _metrics(1.0)}}
  markdown = reports.markdown_table(reports.results_table(rows, [("test", "count")]))
  assert "| a\\|b | 10 |" in markdown
  with pytest.raises(ValueError, match="must be numbers, got \\[1.0\\]"):
    reports.results_table({"A": {"test": {"auc": [1.0]}}}, [("test", "auc")])


def test_file_stem_makes_subset_names_safe_file_names():
  assert reports.file_stem("helen/trainset") == "helen_trainset"
  assert reports.file_stem("300W/01_Indoor") == "300W_01_Indoor"
  assert reports.file_stem("///") == "curve"

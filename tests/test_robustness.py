"""The robustness protocol (msm_jax/eval/robustness.py): each perturbation against a
hand-computed or independent reference, the table's numbers against a hand-computed case, and a
run end to end on a tiny random model."""

import numpy as np
import pytest

from msm_jax.data.records import box_from_landmarks
from msm_jax.eval import robustness
from tests import tiny_models


def test_rotation_about_turns_counter_clockwise_as_displayed():
  # y points down: a point right of the centre goes up (smaller y) when turned by +90 degrees.
  matrix = robustness.rotation_about((10.0, 20.0), 90.0)
  np.testing.assert_allclose(matrix @ [11.0, 20.0, 1.0], [10.0, 19.0, 1.0], atol=1e-12)
  np.testing.assert_allclose(matrix @ [10.0, 20.0, 1.0], [10.0, 20.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("degrees", [0.0, 30.0, -45.0])
def test_face_window_moves_the_landmarks_with_the_pixels(degrees):
  # Bright 5x5 squares at three "landmarks" of a dark photo: in the window, each square's
  # centroid is where the returned landmark is.
  points = np.array([[60.0, 50.0], [100.0, 58.0], [80.0, 95.0]], np.float32)
  photo = np.zeros((160, 200, 3), np.uint8)
  for x, y in points.astype(int):
    photo[y - 2 : y + 3, x - 2 : x + 3] = 255
  window, moved = robustness.face_window(photo, points, degrees)
  side = 3 * (95 - 50)
  assert window.shape == (side, side, 3)
  for x, y in moved:
    rows, cols = np.mgrid[int(y) - 6 : int(y) + 7, int(x) - 6 : int(x) + 7]
    weights = window[rows, cols, 0].astype(np.float64)
    centroid = [(weights * cols).sum() / weights.sum(), (weights * rows).sum() / weights.sum()]
    np.testing.assert_allclose(centroid, [x, y], atol=0.3)


def test_sloppy_boxes_stay_in_their_ranges():
  box = np.array([100.0, 50.0, 200.0, 170.0])
  rng = np.random.default_rng(0)
  boxes = np.stack([robustness.sloppy_box(box, rng) for _ in range(2000)])
  size, centre = box[2:] - box[:2], (box[:2] + box[2:]) / 2
  scales = (boxes[:, 2:] - boxes[:, :2]) / size
  shifts = ((boxes[:, :2] + boxes[:, 2:]) / 2 - centre) / size
  np.testing.assert_allclose(scales[:, 0], scales[:, 1])  # one scale for both sides
  assert 0.8 <= scales.min() < 0.82 and 1.23 < scales.max() <= 1.25
  assert -0.15 <= shifts.min() < -0.14 and 0.14 < shifts.max() <= 0.15


def test_occluder_covers_its_share_of_the_box_and_flags_the_landmarks_under_it():
  # Every pixel of the photo is unique (x in red, y in green), so the pasted rectangle is
  # exactly the set of changed pixels, and a landmark on every pixel centre of the box tells
  # which ones it covers.
  rows, cols = np.mgrid[0:200, 0:240]
  photo = np.stack([cols % 256, rows % 256, np.full_like(rows, 7)], -1).astype(np.uint8)
  box_points = np.stack(np.meshgrid(np.arange(60, 160), np.arange(50, 150)), -1).reshape(-1, 2)
  points = box_points.astype(np.float32)
  box = box_from_landmarks(points)
  area = (box[2] - box[0]) * (box[3] - box[1])
  for seed in range(8):
    occluded, covered = robustness.occlude(photo, points, np.random.default_rng(seed))
    changed = np.any(occluded != photo, axis=-1)
    ys, xs = np.nonzero(changed)
    assert changed.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # one rectangle
    assert 0.28 <= changed.sum() / area <= 0.52
    np.testing.assert_array_equal(
      covered, changed[points[:, 1].astype(int), points[:, 0].astype(int)]
    )
    # The texture was cut outside the face box: red / green encode the source x / y.
    source_x, source_y = occluded[changed, 0].astype(int), occluded[changed, 1].astype(int)
    outside = (source_x < 60) | (source_x > 159) | (source_y < 50) | (source_y > 149)
    assert outside.all()


def test_summary_numbers_by_hand():
  # Two faces of a 68-point scheme with outer eye corners 36 and 45 100 px apart; face 0 off
  # by 2 px everywhere, face 1 off by 10 px on landmarks 0-9 only; a third face not found.
  truth = np.zeros((3, 68, 2), np.float32)
  truth[:, :, 0] = np.arange(68)
  truth[:, 45, 0] = truth[:, 36, 0] + 100.0
  predicted = truth.copy()
  predicted[0, :, 0] += 2.0
  predicted[1, :10, 1] += 10.0
  predicted[2] = np.nan
  occluded = np.zeros((3, 68), bool)
  occluded[:, :10] = True
  reliable = np.ones((3, 68), bool)
  reliable[:, 5:15] = False  # flags 10 per face, 5 of them occluded
  row = robustness.summarise(predicted, truth, reliable, occluded, "300w")
  face_nme = np.array([2.0 / 100, 10 * 10.0 / 68 / 100])
  assert (row["faces"], row["found"]) == (3, 2)
  np.testing.assert_allclose(row["nme"], 100 * face_nme.mean())
  np.testing.assert_allclose(row["median"], 100 * np.median(face_nme))
  assert row["failure_rate"] == 0.0
  np.testing.assert_allclose(row["occluded_nme"], 100 * (2.0 / 100 + 10.0 / 100) / 2)
  np.testing.assert_allclose(row["visible_nme"], 100 * (2.0 / 100 + 0.0) / 2)
  assert row["occlusion_precision"] == 0.5 and row["occlusion_recall"] == 0.5
  assert "visible_clean_nme" not in row
  # The same faces without the occluder: face 0 exact, face 1 off by 4 px on landmarks 10-19
  # (visible), face 2 found there but not under the occluder (left out).
  clean = truth.copy()
  clean[1, 10:20, 0] += 4.0
  row = robustness.summarise(predicted, truth, reliable, occluded, "300w", clean_predicted=clean)
  np.testing.assert_allclose(row["visible_clean_nme"], 100 * (0.0 + 10 * 4.0 / 58 / 100) / 2)


def test_flag_sweep_counts_scores_under_the_scaled_thresholds():
  # Landmark i of one face scores i / 10; K = 0.4 on the first half, 0.6 on the second.
  scores = (np.arange(10) / 10.0)[None].astype(np.float32)
  thresholds = np.array([0.4] * 5 + [0.6] * 5, np.float32)
  occluded = np.zeros((1, 10), bool)
  occluded[0, [0, 1, 5, 9]] = True
  sweep = robustness.flag_sweep(scores, thresholds, occluded, scales=(0.5, 1.0, 1.5))
  # x0.5: flagged 0-2 (<= 0.2) and none of 5-9 (> 0.3): hits 0, 1 -> P 2/3, R 2/4.
  # x1.0: flagged 0-4 and 5-6 (<= 0.6): hits 0, 1, 5 -> P 3/7, R 3/4.
  # x1.5: everything (<= 0.6 and <= 0.9): P 4/10, R 1.
  assert sweep == {"0.5": [2 / 3, 0.5], "1": [3 / 7, 0.75], "1.5": [0.4, 1.0]}
  # At scale 1 it is the flag of the pipeline (reliable = score > K).
  reliable = scores > thresholds
  assert robustness.precision_recall(~reliable, occluded) == tuple(sweep["1"])


def test_a_tiny_model_runs_every_condition_and_variant():
  model = tiny_models.tiny_pretrained()
  records = tiny_models.face_records(count=2)
  table = robustness.evaluate(model, records, seed=0, batch_size=2, log=lambda _: None)
  assert set(table) == {
    "landmark box",
    "detector",
    "rotated 15",
    "rotated 30",
    "rotated 45",
    "sloppy box",
    "occluded",
  }
  # The tiny package has the ST stage and the dictionary: every variant is run.
  assert set(table["landmark box"]) == set(robustness.VARIANTS)
  for condition, rows in table.items():
    for row in rows.values():
      assert row["faces"] == 2
      if condition != "detector":  # given boxes: every face is predicted
        assert row["found"] == 2 and np.isfinite(row["nme"])
  assert "occlusion_recall" in table["occluded"]["HG + SR"]
  assert "| occluded | HG + SR |" in robustness.markdown(table)
  flags = table["occluded"]["HG + SR"]["occlusion_flags"]
  assert list(flags) == [f"{scale:g}" for scale in robustness.FLAG_SCALES]
  # The sweep at K x 1 is the pipeline's own flag (reliable = score > K).
  assert flags["1"][0] == table["occluded"]["HG + SR"]["occlusion_precision"]
  assert flags["1"][1] == table["occluded"]["HG + SR"]["occlusion_recall"]
  assert "occlusion_flags" not in table["landmark box"]["HG + SR"]
  assert "K x 0.5" in robustness.markdown(table)
  # One condition alone: the same faces, so the same row as in the whole run.
  alone = robustness.evaluate(
    model,
    records,
    seed=0,
    batch_size=2,
    log=lambda _: None,
    variants=["HG + SR"],
    conditions=["occluded"],
  )
  assert list(alone) == ["occluded"] and list(alone["occluded"]) == ["HG + SR"]
  # Without the landmark-box run there is no clean reference; the rest is the same.
  whole = dict(table["occluded"]["HG + SR"])
  assert np.isfinite(whole.pop("visible_clean_nme"))
  assert alone["occluded"]["HG + SR"] == whole


def test_the_protocol_on_a_trained_model_has_the_ablation_and_joint_rows_and_is_seeded():
  """`evaluate.py --robustness`'s table: HG, ST + HG, HG + SR, ST + HG + SR, the joint
  variant's ST rows; the same seed prints the same table."""
  import dataclasses

  import jax

  package = tiny_models.tiny_pretrained()
  trained = package.model
  # A "jointly fine-tuned" hourglass: the same network, its last kernels scaled.
  hourglass = jax.tree.map(lambda x: x, trained.variables["hourglass"])
  hourglass["params"] = jax.tree.map(lambda x: 1.5 * x, hourglass["params"])
  trained = dataclasses.replace(
    trained,
    variants={"joint": {"generator": trained.variables["generator"], "hourglass": hourglass}},
  )
  records = tiny_models.face_records(count=2)
  run = lambda: robustness.evaluate_trained(  # noqa: E731
    trained, package.config, records, batch_size=2, log=lambda _: None
  )
  table = run()
  assert list(table["occluded"]) == [
    "HG",
    "ST + HG",
    "HG + SR",
    "ST + HG + SR",
    "ST + HG (joint)",
    "ST + HG + SR (joint)",
  ]
  rows = table["landmark box"]
  assert rows["ST + HG (joint)"]["nme"] != rows["ST + HG"]["nme"]  # the variant's networks
  assert run() == table


def test_records_for_picks_the_split(monkeypatch):
  from msm_jax.data import datasets

  monkeypatch.setattr(datasets, "read_training_records", lambda config: ["a", "b", "c"])
  monkeypatch.setattr(datasets, "split_records", lambda config, records: (records[:2], records[2:]))
  assert robustness.records_for(None, None) == ["c"]
  assert robustness.records_for(None, None, split="train") == ["a", "b"]
  assert robustness.records_for(None, None, limit=1, split="train") == ["a"]
  with pytest.raises(ValueError, match="split 'test'"):
    robustness.records_for(None, None, split="test")
  monkeypatch.setattr(datasets, "split_records", lambda config, records: (records, []))
  with pytest.raises(robustness.NoFacesError, match="no validation split"):
    robustness.records_for(None, None)

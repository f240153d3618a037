"""prediction.py (the Python API) and predict.py (the command line), on a tiny random model."""

import contextlib
import dataclasses
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from msm_jax.core import geometry
from msm_jax.data import augment, synthetic
from msm_jax.inference import prediction, pretrained
from msm_jax.train import packaging, stages
from tests import float_checks, tiny_models

ROOT = tiny_models.ROOT
# Eq. 9's scores sum a spatial softmax over a 64 x 64 map (float32 rounding ~4096 eps).
SCORE_TOLERANCE = float_checks.sum_tolerance(64 * 64)
SCORE_MARGIN = 4 * SCORE_TOLERANCE

BATCH = 2  # every call below uses it: one compilation of the pipeline for the whole file


@pytest.fixture(scope="module")
def model():
  return tiny_models.tiny_pretrained()


def test_crop_squares_are_the_training_crops():
  # Box [10, 20, 50, 80]: centre (30, 50), long side 60, x1.25 -> half 37.5.
  box = np.array([10.0, 20.0, 50.0, 80.0])
  square = prediction.crop_squares(box, 1.25)
  np.testing.assert_allclose(square, [[-7.5, 12.5, 67.5, 87.5]])
  np.testing.assert_allclose(
    geometry.crop_matrix(square[0], 128), augment.face_crop_matrix(box, 128, 1.25), atol=1e-12
  )


def test_predict_images_equals_the_pipeline_on_whole_images(model):
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (2, 150, 170, 3), dtype=np.uint8)
  boxes = [
    np.array([[30.0, 40.0, 120.0, 140.0], [-10.0, -5.0, 60.0, 70.0]]),
    np.array([[90.0, 20.0, 175.0, 100.0]]),
  ]  # the last one leaves the image
  results = prediction.predict_images(model, list(images), boxes=boxes, batch_size=BATCH)
  # Reference: the one-jit pipeline itself, the whole image and the training crop square.
  squares = prediction.crop_squares(np.concatenate(boxes), 1.25).astype(np.float32)
  expected = model.infer(model.model.variables, images[[0, 0, 1]], squares)
  faces = results[0].faces + results[1].faces
  assert [len(r.faces) for r in results] == [2, 1] and results[0].image_size == (150, 170)
  compared = 0
  for row, face in enumerate(faces):
    # A flag decided by a score within rounding of its threshold may differ (and then so does
    # the repair); elsewhere the flags are equal.
    np.testing.assert_allclose(face.scores, expected["scores"][row], atol=SCORE_TOLERANCE)
    float_checks.assert_flags_equal_where_clear(
      face.reliable[None],
      expected["reliable"][row][None],
      expected["scores"][row][None],
      model.model.variables["thresholds"],
      SCORE_MARGIN,
    )
    if (face.reliable == expected["reliable"][row]).all():
      # float32 rounding differs (other image size in the normalised coordinates); the random
      # model's repair throws points hundreds of pixels out, hence the relative part.
      np.testing.assert_allclose(face.landmarks, expected["landmarks"][row], rtol=1e-4, atol=2e-3)
      compared += 1
    # What each stage did: the landmarks before the repair (mapped back to the image like the
    # final ones) and the GDNN's theta of the tiny model (its fixed zoom + shift).
    np.testing.assert_allclose(
      face.hourglass_landmarks, expected["hourglass_landmarks"][row], rtol=1e-4, atol=2e-3
    )
    np.testing.assert_allclose(face.theta.ravel(), tiny_models.ZOOM_SHIFT_THETA, atol=1e-6)
    np.testing.assert_array_equal(face.box, np.concatenate(boxes)[row].astype(np.float32))
    assert face.detector_box is None
  assert compared >= 1  # a flip needs a score within ~1e-5 of its threshold: rare
  reliable = np.concatenate([face.reliable for face in faces])
  assert reliable.any() and not reliable.all()  # both kinds are exercised


def test_large_faces_are_downscaled_with_exact_coordinates():
  # A ramp image whose value is the x coordinate: after the antialiased resize, a window pixel
  # must hold the x its window->image matrix maps it to (the ramp is linear: filters keep it).
  image = np.broadcast_to(np.arange(250, dtype=np.uint8)[None, :, None], (250, 250, 3)).copy()
  square = np.array([5.0, 5.0, 245.0, 245.0])  # 240 > 1.5 x 128: downscaled to 192
  window, window_square, back = prediction.face_window(image, square, 128)
  assert window_square[2] - window_square[0] == pytest.approx(192, rel=0.01)
  np.testing.assert_allclose(
    geometry.apply_affine(window_square.reshape(2, 2), back), square.reshape(2, 2), atol=1e-9
  )
  rows, cols = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
  image_xy = geometry.apply_affine(np.stack([cols, rows], -1).reshape(-1, 2).astype(float), back)
  inside = np.all((image_xy > 3) & (image_xy < 246), axis=1)  # away from the zero border
  values = window[..., 0].reshape(-1)[inside].astype(float)
  assert np.abs(values - image_xy[inside, 0]).max() <= 1.0
  assert window.shape[0] <= prediction.window_size(128)


def test_the_landmark_offset_is_in_image_pixels_for_downscaled_windows_too(model):
  # Faces of 100 and 300 pixels: the second's crop square (375) exceeds 1.5 x 128, so its
  # window is downscaled 2x; the offset must still move the landmarks by itself in the image.
  rng = np.random.default_rng(4)
  image = rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)
  boxes = [np.array([[50.0, 60.0, 150.0, 160.0], [200.0, 220.0, 500.0, 520.0]])]
  shifted = dataclasses.replace(
    model, options=dataclasses.replace(model.options, landmark_offset=(0.5, -0.25))
  )
  plain, moved = (
    prediction.predict_images(each, [image], boxes=boxes, batch_size=BATCH)[0].faces
    for each in (model, shifted)
  )
  for before, after in zip(plain, moved):
    for field in ("landmarks", "hourglass_landmarks"):
      # float32 landmarks up to ~600 px: rounding ~ 600 x 2^-23 per step.
      np.testing.assert_allclose(
        getattr(after, field), getattr(before, field) + [0.5, -0.25], atol=1e-3
      )


def test_exif_rotated_copies_give_the_upright_landmarks(model, tmp_path):
  upright = np.random.default_rng(2).integers(0, 256, (90, 120, 3), dtype=np.uint8)
  paths = [str(tmp_path / "upright.png")]
  Image.fromarray(upright).save(paths[0])
  # Stored rotated, with the EXIF tag that turns it upright again.
  for orientation, stored in ((6, Image.Transpose.ROTATE_90), (3, Image.Transpose.ROTATE_180)):
    exif = Image.Exif()
    exif[0x0112] = orientation
    paths.append(str(tmp_path / f"rotated{orientation}.png"))
    Image.fromarray(upright).transpose(stored).save(paths[-1], exif=exif)
    assert np.array_equal(prediction.load_upright(paths[-1]), upright)
  box = np.array([[20.0, 10.0, 100.0, 85.0]])
  results = prediction.predict_images(model, paths, boxes=[box] * 3, batch_size=BATCH)
  assert all(result.image_size == (90, 120) for result in results)
  # The same pixels in other windows and batch sizes: equal up to float32 rounding, relative
  # to coordinates the random model's repair throws ~200 px out.
  for result in results[1:]:
    np.testing.assert_allclose(
      result.faces[0].landmarks, results[0].faces[0].landmarks, rtol=1e-5, atol=1e-3
    )
  assert prediction.exif_orientation(paths[1]) == 6
  assert prediction.exif_orientation(paths[0]) is None


def test_per_file_errors_are_named_and_collected(model, tmp_path):
  corrupt = tmp_path / "corrupt.jpg"
  corrupt.write_bytes(b"\xff\xd8\xff not a jpeg")
  missing = str(tmp_path / "missing.png")
  blank = np.full((120, 120, 3), 128, np.uint8)
  results = prediction.predict_images(
    model, [str(corrupt), missing, blank], errors="collect", batch_size=BATCH
  )
  assert "cannot read image" in results[0].error and "corrupt.jpg" in results[0].error
  assert "missing.png" in results[1].error
  assert "image 2: no face found" in results[2].error
  assert all(result.faces == [] for result in results)
  with pytest.raises(prediction.NoFaceFoundError, match="no face found"):
    prediction.predict_images(model, [blank])
  with pytest.raises(ValueError, match="image 0: box 0 .* has x1 <= x0 or y1 <= y0"):
    prediction.predict_images(model, [blank], boxes=[np.array([[10.0, 10.0, 5.0, 20.0]])])
  with pytest.raises(ValueError, match="image 0: boxes must be \\[N, 4\\]"):
    prediction.predict_images(model, [blank], boxes=[np.array([[10.0, 10.0, 5.0]])])


def test_save_overlay_colours(tmp_path):
  points = np.array([[20.0, 20.0], [40.0, 30.0]], np.float32)
  face = prediction.FacePrediction(
    box=np.array([10.0, 10.0, 50.0, 50.0], np.float32),
    detector_box=None,
    landmarks=points,
    scores=np.array([0.9, 0.1], np.float32),
    reliable=np.array([True, False]),
  )
  path = str(tmp_path / "overlay.png")
  prediction.save_overlay(path, np.zeros((64, 64, 3), np.uint8), [face])
  drawn = np.asarray(Image.open(path).convert("RGB"))
  assert drawn.shape == (64, 64, 3)
  assert tuple(drawn[20, 20]) == prediction.RELIABLE_COLOUR  # row y=20, column x=20
  assert tuple(drawn[30, 40]) == prediction.REPAIRED_COLOUR
  assert prediction.BOX_COLOUR in {tuple(drawn[30, x]) for x in (10, 11)}  # the left edge
  assert tuple(drawn[30, 25]) == (0, 0, 0)  # inside the box, away from the points


def test_save_overlay_on_a_full_disk_keeps_the_older_file(tmp_path, monkeypatch):
  face = prediction.FacePrediction(
    box=np.array([10.0, 10.0, 50.0, 50.0], np.float32),
    detector_box=None,
    landmarks=np.array([[20.0, 20.0]], np.float32),
    scores=np.array([0.9], np.float32),
    reliable=np.array([True]),
  )
  path = tmp_path / "overlay.png"
  prediction.save_overlay(str(path), np.zeros((64, 64, 3), np.uint8), [face])
  older = path.read_bytes()

  def full_disk(self, fp, format=None, **params):  # the encoder has written part of the PNG
    with open(fp, "wb") if isinstance(fp, (str, os.PathLike)) else contextlib.nullcontext(fp) as f:
      f.write(older[:20])
      raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(Image.Image, "save", full_disk)
  with pytest.raises(OSError, match="No space left on device"):
    prediction.save_overlay(str(path), np.full((64, 64, 3), 255, np.uint8), [face])
  monkeypatch.undo()
  assert os.listdir(tmp_path) == ["overlay.png"] and path.read_bytes() == older


def test_prediction_to_json_fields():
  face = prediction.FacePrediction(
    box=np.array([1, 2, 3, 4], np.float32),
    detector_box=np.array([0, 1, 5, 6], np.float32),
    detector="dlib_hog",
    landmarks=np.full((68, 2), 1.23456, np.float32),
    scores=np.ones(68, np.float32),
    reliable=np.ones(68, bool),
    hourglass_landmarks=np.full((68, 2), 2.0, np.float32),
    theta=np.array([[0.9, 0.1, 0.05], [-0.1, 0.9, -0.03]], np.float32),
  )
  document = json.loads(
    json.dumps(
      prediction.prediction_to_json(
        prediction.ImagePrediction("a.jpg", (10, 20), [face]), exif_orientation=6
      )
    )
  )
  assert document["image_size"] == {"height": 10, "width": 20}
  assert "EXIF orientation applied" in document["coordinates"]
  assert document["exif_orientation"] == 6
  [entry] = document["faces"]
  assert entry["box_source"] == "dlib_hog (calibrated)" and entry["detector_box"] == [0, 1, 5, 6]
  assert len(entry["landmarks"]) == 68 and entry["landmarks"][0] == [1.235, 1.235]
  assert len(entry["scores"]) == 68 and entry["reliable"][0] is True
  assert entry["hourglass_landmarks"][0] == [2.0, 2.0]
  assert entry["theta"] == [[0.9, 0.1, 0.05], [-0.1, 0.9, -0.03]]


def _run_predict(*args):
  return subprocess.run(
    [sys.executable, os.path.join(ROOT, "predict.py"), *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_predict_command_end_to_end(model, tmp_path):
  package = str(tmp_path / "package")
  packaging.write_package(model, package)
  photos = tmp_path / "photos"
  photos.mkdir()
  face_image = tiny_models.detectable_face(model.calibration.cascade)["image"]
  Image.fromarray(face_image).save(photos / "face.png")
  Image.fromarray(np.full((100, 140, 3), 200, np.uint8)).save(photos / "blank.png")
  (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
  (photos / "notes.txt").write_text("not an image: not picked up from the folder")
  out = tmp_path / "out"

  result = _run_predict(
    str(photos), "--out", str(out), "--model", package, "--batch-size", str(BATCH)
  )
  assert result.returncode == 1, result.stderr[-3000:]
  assert "no face found" in result.stderr and "blank.png" in result.stderr
  assert "cannot read image" in result.stderr and "broken.jpg" in result.stderr
  assert "1 image(s)" in result.stdout and "2 failed" in result.stdout
  assert sorted(os.listdir(out)) == ["face.json", "face_overlay.png"]
  document = json.load(open(out / "face.json"))
  assert document["faces"] and len(document["faces"][0]["landmarks"]) == 68
  # The command's numbers are the Python API's for the same file and model.
  [expected] = prediction.predict_images(model, [str(photos / "face.png")], batch_size=BATCH)
  np.testing.assert_allclose(
    document["faces"][0]["landmarks"], expected.faces[0].landmarks, atol=1e-3
  )
  assert Image.open(out / "face_overlay.png").size == (256, 256)


def test_predict_command_rejects_bad_boxes_and_missing_model(tmp_path):
  image = tmp_path / "a.png"
  Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
  boxes = tmp_path / "boxes.json"
  boxes.write_text(json.dumps({"a.png": [[1, 2, 3]]}))
  result = _run_predict(str(image), "--boxes", str(boxes), "--model", str(tmp_path))
  assert result.returncode == 2
  assert "boxes.json: entry 'a.png' must be a non-empty list of [x0, y0, x1, y1]" in result.stderr
  result = _run_predict(str(image), "--model", str(tmp_path / "nowhere"))
  assert result.returncode == 2
  assert (
    "no pretrained model" in result.stderr and "python -m msm_jax.train.packaging" in result.stderr
  )


def test_detectors_are_tried_in_order_until_one_finds_a_face(model, monkeypatch):
  from msm_jax.inference import detection

  assert [c.cascade for c in model.calibrations] == [detection.DLIB_HOG, detection.DEFAULT_CASCADE]
  found = {detection.DLIB_HOG: np.zeros((0, 4), np.float32)}
  haar_box = np.array([[30.0, 20.0, 110.0, 100.0]], np.float32)
  monkeypatch.setattr(
    detection, "detect_faces", lambda image, cascade: found.get(cascade, haar_box)
  )
  monkeypatch.setattr(detection, "detector_available", lambda name: True)
  image = np.full((140, 150, 3), 90, np.uint8)
  [result] = prediction.predict_images(model, [image], batch_size=BATCH)
  [face] = result.faces
  np.testing.assert_array_equal(face.detector_box, haar_box[0])
  assert face.detector == detection.DEFAULT_CASCADE
  expected = detection.calibrated_face_box(haar_box, model.calibrations[1])[0]
  np.testing.assert_allclose(face.box, expected, rtol=1e-6)
  found[detection.DEFAULT_CASCADE] = np.zeros((0, 4), np.float32)
  with pytest.raises(prediction.NoFaceFoundError, match="no face found by dlib_hog, haarcascade"):
    prediction.predict_images(model, [image], batch_size=BATCH)


def test_predict_command_never_overwrites_its_inputs(model, tmp_path):
  package = str(tmp_path / "package")
  packaging.write_package(model, package)
  photos = tmp_path / "photos"
  photos.mkdir()
  face = tiny_models.face_records(count=1)[0].image
  Image.fromarray(face).save(photos / "a.png")
  # A user's photo that happens to be named like an overlay of a.png.
  Image.fromarray(np.full((40, 50, 3), 77, np.uint8)).save(photos / "a_overlay.png")
  before = (photos / "a_overlay.png").read_bytes()
  boxes = tmp_path / "boxes.json"
  boxes.write_text(json.dumps({"a.png": [[40, 40, 150, 150]]}))
  result = _run_predict(
    str(photos), "--out", str(photos), "--model", package, "--boxes", str(boxes)
  )
  # a_overlay.png is not read as an input (it is named like this tool's outputs) and is not
  # overwritten: a.png's overlay would land on it, so a.png fails with the reason.
  assert result.returncode == 1, result.stderr[-3000:]
  assert "a_overlay.png is one of the input files" in result.stderr
  assert "0 image(s)" in result.stdout and "1 failed" in result.stdout
  assert (photos / "a_overlay.png").read_bytes() == before
  # Nothing to read at all is a failure too, not a silent success.
  empty = tmp_path / "empty"
  empty.mkdir()
  result = _run_predict(str(empty), "--model", package)
  assert result.returncode == 1 and "no image files in" in result.stderr


def test_calls_are_padded_to_powers_of_two_not_to_the_flag():
  assert [prediction.padded_batch(n, 16) for n in (1, 2, 3, 5, 9, 16)] == [1, 2, 4, 8, 16, 16]
  assert prediction.padded_batch(7, 6) == 6  # never above the flag


@pytest.mark.parametrize(
  "box, why",
  [
    ([400.0, 400.0, 500.0, 500.0], "0 % on the image"),  # another image's box
    ([50.0, 50.0, 50.001, 50.001], "side 0.0 px"),  # a speck
    ([-1e30, -1e30, 1e30, 1e30], "side 2"),
    ([-2e4, -2e4, 2e4, 2e4], "side 40000.0 px"),  # a window of 100k px: refused, not allocated
  ],
)
def test_boxes_that_cannot_frame_a_face_are_refused_per_image(model, box, why):
  image = np.full((120, 160, 3), 90, np.uint8)
  results = prediction.predict_images(
    model,
    [image, image],
    boxes=[np.array([box]), np.array([[20.0, 10.0, 110.0, 100.0]])],
    batch_size=BATCH,
    errors="collect",
  )
  assert "does not frame a face" in results[0].error and why in results[0].error
  assert results[0].faces == [] and len(results[1].faces) == 1  # the other image is done


def test_non_finite_landmarks_are_an_error_never_a_json_nan(model, monkeypatch):
  # A model whose outputs are NaN for one face (as NaN weights would give): that image fails
  # with the reason, the other is done, and no NaN reaches a result.
  infer = model.infer

  def poisoned(variables, images, boxes):
    out = dict(infer(variables, images, boxes))
    out["landmarks"] = np.asarray(out["landmarks"]).copy()
    out["landmarks"][0, 5] = np.nan
    return out

  monkeypatch.setattr(type(model), "infer", property(lambda self: poisoned))
  image = np.full((120, 160, 3), 90, np.uint8)
  results = prediction.predict_images(
    model,
    [image, image],
    boxes=[np.array([[20.0, 10.0, 110.0, 100.0]])] * 2,
    batch_size=BATCH,
    errors="collect",
  )
  assert "non-finite landmarks" in results[0].error and results[0].faces == []
  assert results[1].error is None and np.isfinite(results[1].faces[0].landmarks).all()


def test_boxes_json_accepts_a_flat_box_for_one_face(tmp_path):
  import importlib.util

  spec = importlib.util.spec_from_file_location("predict_cli", os.path.join(ROOT, "predict.py"))
  predict_cli = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(predict_cli)
  path = tmp_path / "boxes.json"
  path.write_text(json.dumps({"a.jpg": [1, 2, 30, 40], "b.jpg": [[1, 2, 30, 40], [5, 5, 9, 9]]}))
  table = predict_cli.read_boxes(str(path))
  np.testing.assert_array_equal(table["a.jpg"], [[1, 2, 30, 40]])
  assert table["b.jpg"].shape == (2, 4)
  path.write_text(json.dumps({"a.jpg": [1, 2, 30]}))
  with pytest.raises(ValueError, match="entry 'a.jpg' must be"):
    predict_cli.read_boxes(str(path))


def test_an_output_folder_that_cannot_be_made_is_one_line(model, tmp_path):
  package = str(tmp_path / "package")
  packaging.write_package(model, package)
  Image.fromarray(np.full((60, 60, 3), 90, np.uint8)).save(tmp_path / "a.png")
  (tmp_path / "blocker").write_text("a file where the output folder should go")
  result = _run_predict(
    str(tmp_path / "a.png"), "--out", str(tmp_path / "blocker" / "out"), "--model", package
  )
  assert result.returncode == 2
  assert "cannot create the output folder" in result.stderr and "Traceback" not in result.stderr


def _bfloat16_pretrained(per_face: bool):
  """The tiny model computing in bfloat16 with the CPU kernels the shipped package uses, whose
  rounding depends on the batch: the case where a face's companions could move it."""
  config = tiny_models.tiny_config()
  config.hourglass.compute_dtype = "bfloat16"
  config.hourglass.kernels = "auto"
  base = tiny_models.tiny_pretrained()
  hourglass = stages.hourglass_module(config)
  model = dataclasses.replace(base.model, networks={"hourglass": hourglass})
  options = dataclasses.replace(base.options, use_spatial_transformer=False, per_face=per_face)
  return dataclasses.replace(base, model=model, options=options, config=config)


def test_a_face_gives_the_same_landmarks_alone_and_in_every_padded_batch():
  """One face alone, then first in calls padded to 2, 4 and 8 faces with other faces beside
  it: flags identical, landmarks within 0.02 px (`PipelineOptions.per_face`, on by default on
  a CPU)."""
  model = _bfloat16_pretrained(per_face=pretrained.per_face_on_this_backend())
  faces = [synthetic.render_face(index, 0) for index in range(8)]
  images = [face["image"] for face in faces]
  boxes = [np.asarray(face["box"], np.float32)[None] for face in faces]
  [alone] = prediction.predict_images(model, images[:1], boxes=boxes[:1])[0].faces
  for count in (2, 3, 4, 5, 8):
    results = prediction.predict_images(model, images[:count], boxes=boxes[:count], batch_size=8)
    [first] = results[0].faces
    np.testing.assert_array_equal(first.reliable, alone.reliable)
    assert np.abs(first.landmarks - alone.landmarks).max() <= 0.02, count
    assert np.abs(first.hourglass_landmarks - alone.hourglass_landmarks).max() <= 0.02, count


def test_adaptive_compute_needs_its_threshold(model):
  # What it computes is checked against the pipeline in test_tracking.py (a model whose
  # landmarks are known).
  images, boxes = [np.zeros((40, 40, 3), np.uint8)], [np.array([[5.0, 5.0, 30.0, 30.0]])]
  with pytest.raises(ValueError, match="needs refine_below"):
    prediction.predict_images(model, images, boxes=boxes, compute="adaptive")
  with pytest.raises(ValueError, match="compute must be one of full, adaptive"):
    prediction.predict_images(model, images, boxes=boxes, compute="quick")


CACHE_SCRIPT = """
import jax, jax.numpy as jnp
from msm_jax.inference import pipeline
from msm_jax.kernels import onednn
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # this tiny one too
folder = pipeline.use_compilation_cache()
hits = []
jax.monitoring.register_event_listener(
  lambda event, **kwargs: hits.append(event) if event.endswith("/cache_hits") else None
)
def layer(x, kernel, bias):  # a oneDNN custom call, as the shipped hourglass makes on a CPU
  if onednn.available():
    return onednn.conv2d(x, kernel, bias, (1, 1), ((1, 1), (1, 1)), True)
  return jax.nn.relu(jax.lax.conv(x, kernel, (1, 1), "SAME") + bias)
x = jnp.ones((1, 8, 8, 4)) if onednn.available() else jnp.ones((1, 4, 8, 8))
kernel = jnp.ones((3, 3, 4, 4)) if onednn.available() else jnp.ones((4, 4, 3, 3))
print(len(hits), float(jax.jit(layer)(x, kernel, jnp.ones(4)).sum()), folder)
"""


def test_a_second_process_loads_the_compilation_from_the_users_cache(tmp_path):
  env = dict(os.environ, MSM_JAX_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT)

  def run():
    done = subprocess.run(
      [sys.executable, "-c", CACHE_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()

  first, second = run(), run()
  assert first[0] == "0" and int(second[0]) >= 1  # compiled, then loaded
  assert first[1] == second[1]  # the loaded program computes the same
  assert first[2] == second[2] == str(tmp_path / "cache") and os.listdir(first[2])

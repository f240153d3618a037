"""predict.py's failure handling, run in-process on a tiny random model: outputs written whole
or not at all (a full disk, Ctrl-C), one line and exit status 130 on Ctrl-C, errors that name
their file, and an output folder inside an input folder never read as input."""

import dataclasses
import errno
import importlib.util
import json
import math
import os
import types

import numpy as np
import pytest
from PIL import Image

from msm_jax.data import images as image_io
from msm_jax.inference import pretrained
from msm_jax.train import packaging
from tests import tiny_models

BATCH = 2  # as in test_prediction.py: the same compiled batch sizes
BOX = [20.0, 10.0, 110.0, 100.0]
OTHER_BOX = [30.0, 20.0, 120.0, 110.0]


@pytest.fixture(scope="module")
def model():
  return tiny_models.tiny_pretrained()


@pytest.fixture(scope="module")
def predict_cli():
  spec = importlib.util.spec_from_file_location(
    "predict_cli", os.path.join(tiny_models.ROOT, "predict.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def run(predict_cli, capsys):
  """run(*argv) -> (exit status, stdout, stderr) of predict.py's main in this process."""

  def run_main(*argv):
    try:
      status = predict_cli.main([*argv, "--batch-size", str(BATCH)])
    except KeyboardInterrupt:
      pytest.fail("KeyboardInterrupt escaped predict.main")
    captured = capsys.readouterr()
    return types.SimpleNamespace(status=status, out=captured.out, err=captured.err)

  return run_main


@pytest.fixture
def shipped(model, monkeypatch):
  """predict.py's --model loads the tiny model (compiled once for the module)."""
  monkeypatch.setattr(pretrained, "load_pretrained", lambda directory: model)


def _photos(folder, names):
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(5)
  for name in names:
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(folder / name)


def _boxes(path, names, box=BOX):
  path.write_text(json.dumps({name: [box] for name in names}))
  return str(path)


def _contents(folder) -> dict:
  return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def _full_disk_encoder(monkeypatch, fail_on_call=None, error=None):
  """PIL's save writes the start of a PNG, then raises (ENOSPC by default): on that call, or
  on every call."""
  real_save, calls = Image.Image.save, []

  def save(self, fp, format=None, **params):
    calls.append(fp)
    if fail_on_call is not None and len(calls) != fail_on_call:
      return real_save(self, fp, format, **params)
    if isinstance(fp, (str, os.PathLike)):  # as PIL does for a path: open, write, close
      with open(fp, "wb") as file:
        return write_and_fail(file)
    return write_and_fail(fp)

  def write_and_fail(file):
    file.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    raise error or OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(Image.Image, "save", save)


@pytest.mark.parametrize("failing", ["image encoder", "fsync"])
def test_a_full_disk_keeps_older_outputs_whole_and_names_the_file(
  shipped, run, tmp_path, monkeypatch, failing
):
  _photos(tmp_path / "photos", ["a.png"])
  image = str(tmp_path / "photos" / "a.png")
  out = tmp_path / "out"
  first = run(image, "--out", str(out), "--boxes", _boxes(tmp_path / "b1.json", ["a.png"]))
  assert first.status == 0, first.err
  older = _contents(out)
  assert sorted(older) == ["a.json", "a_overlay.png"]

  # Another box: outputs that would differ from the older ones, if they were written.
  boxes = _boxes(tmp_path / "b2.json", ["a.png"], OTHER_BOX)
  if failing == "fsync":
    from msm_jax import files

    def no_space(descriptor):
      raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
  else:
    _full_disk_encoder(monkeypatch)
  second = run(image, "--out", str(out), "--boxes", boxes)
  fresh = tmp_path / "fresh"  # no older outputs: none at all, not a truncated one
  third = run(image, "--out", str(fresh), "--boxes", boxes)
  monkeypatch.undo()

  assert second.status == 1 and third.status == 1
  for result, folder in ((second, out), (third, fresh)):
    assert "No space left on device" in result.err and "Traceback" not in result.err
    named = [str(folder / name) for name in ("a.json", "a_overlay.png")]
    assert any(name in result.err for name in named), result.err
  assert _contents(out) == older  # both older files as they were, no temporary left
  assert os.listdir(fresh) == []


@pytest.mark.parametrize("interrupted_in, done", [("overlay", 1), ("prediction", 2)])
def test_ctrl_c_is_one_line_exit_130_and_finished_outputs_whole(
  shipped, run, tmp_path, monkeypatch, interrupted_in, done
):
  names = ["a.png", "b.png", "c.png"]
  _photos(tmp_path / "photos", names)
  boxes = _boxes(tmp_path / "boxes.json", names)
  if interrupted_in == "overlay":  # Ctrl-C in the middle of b's overlay PNG
    _full_disk_encoder(monkeypatch, fail_on_call=2, error=KeyboardInterrupt())
  else:  # Ctrl-C while the model runs on the second batch (c)
    from msm_jax.inference import prediction

    real, calls = prediction.predict_images, []

    def predict_images(*args, **kwargs):
      calls.append(args)
      if len(calls) == 2:
        raise KeyboardInterrupt
      return real(*args, **kwargs)

    monkeypatch.setattr(prediction, "predict_images", predict_images)
  out = tmp_path / "out"
  result = run(
    *(str(tmp_path / "photos" / name) for name in names), "--out", str(out), "--boxes", boxes
  )
  monkeypatch.undo()

  assert result.status == 130
  assert "Traceback" not in result.err
  [line] = result.err.strip().splitlines()
  assert line.startswith(f"interrupted: {done} of 3 images done"), line
  stems = ["a", "b", "c"][:done]
  assert sorted(os.listdir(out)) == sorted(
    name for stem in stems for name in (f"{stem}.json", f"{stem}_overlay.png")
  )
  for stem in stems:  # complete: the JSON parses, the PNG decodes
    assert len(json.loads((out / f"{stem}.json").read_text())["faces"]) == 1
    Image.open(out / f"{stem}_overlay.png").load()


def test_boxes_json_with_invalid_utf8_names_the_file(run, tmp_path):
  _photos(tmp_path, ["a.png"])
  boxes = tmp_path / "boxes.json"
  boxes.write_bytes(b'{"a.png": [1, 2, 30, 40], "caf\xe9.png": [1, 2, 30, 40]}')  # Latin-1
  result = run(str(tmp_path / "a.png"), "--boxes", str(boxes), "--out", str(tmp_path / "out"))
  assert result.status == 2
  assert str(boxes) in result.err and "UTF-8" in result.err and "Traceback" not in result.err


def test_a_package_config_with_invalid_utf8_names_the_file(model, run, tmp_path):
  package = tmp_path / "package"
  packaging.write_package(model, str(package))
  config = package / pretrained.CONFIG_FILE
  config.write_bytes(config.read_bytes().replace(b'"format"', b'"form\xe4t"', 1))
  _photos(tmp_path, ["a.png"])
  result = run(str(tmp_path / "a.png"), "--model", str(package), "--out", str(tmp_path / "out"))
  assert result.status == 2
  assert str(config) in result.err and "Traceback" not in result.err, result.err


@pytest.mark.parametrize("layout", ["out inside the photos", "predict.py . (predictions/)"])
def test_a_second_run_never_reads_the_output_folder(shipped, run, tmp_path, monkeypatch, layout):
  photos = tmp_path / "photos"
  _photos(photos, ["a.png", "b.png"])
  boxes = _boxes(tmp_path / "boxes.json", ["a.png", "b.png"])
  if layout == "out inside the photos":
    args, out = [str(photos), "--out", str(photos / "out")], photos / "out"
  else:
    monkeypatch.chdir(photos)
    args, out = ["."], photos / "predictions"
  first = run(*args, "--boxes", boxes)
  assert first.status == 0, first.err
  # An image in the output folder (copied there, or another tool's): not an input either.
  Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(out / "stray.png")
  read = []
  load_image = image_io.load_image
  monkeypatch.setattr(
    image_io, "load_image", lambda path, **kwargs: read.append(path) or load_image(path, **kwargs)
  )
  second = run(*args, "--boxes", boxes)
  assert second.status == 0, second.err
  assert "2 image(s)" in second.out and "0 failed" in second.out
  assert read and not [
    path for path in read if os.path.realpath(path).startswith(str(out.resolve()) + os.sep)
  ]
  assert sorted(os.listdir(out)) == [
    "a.json",
    "a_overlay.png",
    "b.json",
    "b_overlay.png",
    "stray.png",
  ]


# Videos: the tiny random model's landmarks are nowhere near the face, so its confidence is
# tiny and every tracked face is lost again; lost_below = 0 keeps the detector's faces, and
# the run exercises detection, JSON lines, the overlay and the progress bar on every frame.
ACCEPT_EVERY_FACE = {"lost_below": 0.0, "refine_below": 0.0, "refine_below_detected": 0.0}


def _clip(path, face_frames: int = 4, blank_frames: int = 2, rate: float = 20.0):
  """A lossless clip: the rendered face (the detectors find it), moving 2 px a frame, then
  black frames."""
  import cv2

  face = tiny_models.detectable_face("haarcascade_frontalface_default.xml")["image"]
  height, width = face.shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), rate, (width, height))
  for index in range(face_frames):
    writer.write(np.ascontiguousarray(np.roll(face, 2 * index, axis=1)[..., ::-1]))
  for _ in range(blank_frames):
    writer.write(np.zeros_like(face))
  writer.release()
  return str(path)


def _thresholds(tmp_path):
  path = tmp_path / "thresholds.json"
  path.write_text(json.dumps(ACCEPT_EVERY_FACE))
  return str(path)


def _frame_count(path) -> int:
  from msm_jax.inference import video

  with video.open_video(str(path)) as source:
    return sum(1 for _ in source)


def test_a_video_gives_one_json_line_per_frame_and_its_overlay(shipped, run, tmp_path):
  clip = _clip(tmp_path / "clip.mkv")
  out = tmp_path / "out"
  overlay = out / "clip_overlay.mp4"
  result = run(
    clip, "--out", str(out), "--overlay-video", str(overlay), "--thresholds", _thresholds(tmp_path)
  )
  assert result.status == 0, result.err
  lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
  assert [line["frame"] for line in lines] == list(range(6))
  np.testing.assert_allclose([line["time"] for line in lines], np.arange(6) / 20.0, atol=1e-3)
  for line in lines[:4]:
    [face] = line["faces"]
    assert isinstance(face["id"], int) and len(face["box"]) == 4
    assert len(face["landmarks"]) == 68 and len(face["scores"]) == 68
    assert len(face["reliable"]) == 68 and face["detected"] is True
  assert [line["faces"] for line in lines[4:]] == [[], []]
  assert _frame_count(overlay) == 6 and sorted(os.listdir(out)) == [
    "clip.jsonl",
    "clip_overlay.mp4",
  ]
  assert "frame/s" in result.err  # the progress bar's rate
  assert "6 frame(s) of" in result.out and "4 with faces" in result.out


def test_video_lines_to_the_standard_output(shipped, predict_cli, tmp_path, capfd):
  clip = _clip(tmp_path / "clip.mkv", face_frames=1, blank_frames=1)
  status = predict_cli.main([clip, "--jsonl", "-", "--thresholds", _thresholds(tmp_path)])
  captured = capfd.readouterr()
  assert status == 0, captured.err
  assert [json.loads(line)["frame"] for line in captured.out.splitlines()] == [0, 1]
  assert "2 frame(s)" in captured.err  # the summary leaves the standard output to the lines


@pytest.mark.parametrize(
  "argv, status, message",
  [
    (["{tmp}/missing.mp4"], 1, "{tmp}/missing.mp4: no such file"),
    (["{tmp}/notes.mp4"], 1, "{tmp}/notes.mp4: cannot read it as a video"),
    (["--camera", "99"], 1, "camera 99: cannot open it"),
    (["{clip}", "--detect-every", "-1"], 2, "--detect-every must be >= 0"),
    (["{clip}", "--network-every", "0"], 2, "--network-every must be >= 1"),
    (["{clip}", "--overlay-video", "{tmp}/o.gif"], 2, "cannot write a .gif video"),
    (["{clip}", "{clip}"], 2, "one video file or --camera N"),
    (["{clip}", "--boxes", "{tmp}/b.json"], 2, "--boxes is for photos"),
    (["{clip}", "--jsonl", "{clip}"], 2, "an output would overwrite the video"),
    (["{tmp}/a.png", "--overlay-video", "{tmp}/o.mp4"], 2, "--overlay-video is for videos"),
    (["{clip}", "--thresholds", "{tmp}/notes.mp4"], 2, "notes.mp4: cannot read thresholds"),
  ],
)
def test_video_errors_are_one_line(shipped, run, tmp_path, argv, status, message):
  (tmp_path / "notes.mp4").write_text("not a video")
  _photos(tmp_path, ["a.png"])
  clip = str(tmp_path / "clip.mkv")
  fill = lambda text: text.format(tmp=tmp_path, clip=clip)
  if any("clip" in arg for arg in argv):
    _clip(clip, face_frames=1, blank_frames=0)
  result = run(*(fill(arg) for arg in argv))
  assert result.status == status, result.err
  [line] = result.err.strip().splitlines()
  assert line.startswith("error: ") and fill(message) in line, line


def test_ctrl_c_during_a_video_keeps_the_frames_done_whole(shipped, run, tmp_path, monkeypatch):
  from msm_jax.inference import tracking

  clip = _clip(tmp_path / "clip.mkv", face_frames=4, blank_frames=2)
  real_update, calls = tracking.Tracker.update, []

  def update(self, frame, time=None):
    calls.append(time)
    if len(calls) == 4:
      raise KeyboardInterrupt
    return real_update(self, frame, time)

  monkeypatch.setattr(tracking.Tracker, "update", update)
  out = tmp_path / "out"
  overlay = out / "overlay.mkv"
  result = run(
    clip, "--out", str(out), "--overlay-video", str(overlay), "--thresholds", _thresholds(tmp_path)
  )
  monkeypatch.undo()
  assert result.status == 130 and "Traceback" not in result.err
  [line] = [line for line in result.err.splitlines() if line.startswith("interrupted")]
  assert line.startswith("interrupted: 3 frames done") and str(overlay) in line
  text = (out / "clip.jsonl").read_text()
  assert [json.loads(line)["frame"] for line in text.splitlines()] == [0, 1, 2]
  assert _frame_count(overlay) == 3 and sorted(os.listdir(out)) == ["clip.jsonl", "overlay.mkv"]


@pytest.fixture(autouse=True)
def cache_calls(monkeypatch):
  """predict.py keeps JAX's compilations in the user's cache folder; in this process the call
  is recorded instead, so the tests leave no files in the home folder (a second process
  loading them is test_prediction.py's test)."""
  from msm_jax.inference import pipeline

  calls = []
  monkeypatch.setattr(pipeline, "use_compilation_cache", lambda folder=None: calls.append(folder))
  return calls


def test_photos_take_the_compute_policy_and_the_thresholds(
  shipped, model, run, tmp_path, monkeypatch, cache_calls
):
  from msm_jax.inference import prediction, tracking

  _photos(tmp_path / "photos", ["a.png"])
  seen = []
  monkeypatch.setattr(
    prediction,
    "predict_images",
    lambda model, paths, **kwargs: (
      seen.append(kwargs) or [prediction.ImagePrediction(paths[0], (120, 160), [])]
    ),
  )
  thresholds = tmp_path / "thresholds.json"
  thresholds.write_text(json.dumps({**ACCEPT_EVERY_FACE, "refine_below_detected": 0.42}))
  photo = str(tmp_path / "photos" / "a.png")
  out = str(tmp_path / "out")
  assert run(photo, "--out", out).status == 0
  assert (
    run(photo, "--out", out, "--compute", "adaptive", "--thresholds", str(thresholds)).status == 0
  )
  fitted = dataclasses.replace(
    model, tracking_thresholds=tracking.TrackingThresholds(0.1, 0.2, 0.33)
  )
  monkeypatch.setattr(pretrained, "load_pretrained", lambda directory: fitted)
  assert run(photo, "--out", out, "--compute", "adaptive").status == 0  # the package's own
  assert [(kwargs["compute"], kwargs["refine_below"]) for kwargs in seen] == [
    ("full", math.inf),
    ("adaptive", 0.42),
    ("adaptive", 0.33),
  ]
  assert cache_calls == [None, None, None]  # the user's cache folder, before the model loads

"""Frames in and out for `predict.py`'s video mode: reading a video file or a camera through
OpenCV (its wheel's bundled FFmpeg decodes what FFmpeg decodes), writing the overlay video, and
the per-frame JSON lines.

Every failure is a `VideoError` whose message names the file or camera and the problem:
OpenCV's and FFmpeg's own log lines are silenced (`quiet_opencv`), since they print half a
dozen lines for a file that is not a video and none of them says which file.

Outputs are written so that a stopped run (Ctrl-C, a kill, a full disk) leaves nothing half
written: the overlay video goes to a hidden temporary file beside its target and is renamed
over it once finished (`OverlayWriter`); the JSON lines are one `os.write` each, and a line a
failed write left half done is cut off again (`JsonLines`), so the file always ends with a
whole line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

import numpy as np

# FFmpeg's log level is read when OpenCV first uses FFmpeg in the process, so it is set here,
# before OpenCV is imported, unless the user chose one (-8: quiet).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402

from msm_jax.data import overlays  # noqa: E402

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
# Overlay video codecs by extension: encoders present in opencv-python-headless's FFmpeg
# (it has no H.264 encoder); FFV1 is lossless.
WRITER_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}


class VideoError(ValueError):
  """A video or camera that cannot be read, or a video that cannot be written."""


def quiet_opencv() -> None:
  """Silence OpenCV's own log lines (unless the user set their level); FFmpeg's are silenced
  on import (above)."""
  if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def is_video(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class Frame:
  """index: from 0; time: seconds (the file's timestamp, or since the camera opened); image:
  [H, W, 3] uint8 RGB."""

  index: int
  time: float
  image: np.ndarray


class VideoReader:
  """The frames of an opened `cv2.VideoCapture`, as `Frame`s; `open_video` / `open_camera`.

  name: the file or "camera N"; frame_rate: frames per second (None where unknown);
  frame_count: the file's frame count (None for a camera or where unknown); size: (width,
  height); frames_read: so far."""

  def __init__(self, capture, name: str, live: bool):
    self._capture, self.name, self._live = capture, name, live
    rate = capture.get(cv2.CAP_PROP_FPS)
    self.frame_rate = float(rate) if np.isfinite(rate) and rate > 0 else None
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    self.frame_count = int(count) if not live and np.isfinite(count) and count > 0 else None
    self.size = (
      int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
      int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    self.frames_read = 0
    self._opened_at = time.monotonic()
    self._last_time = -np.inf

  def _frame_time(self) -> float:
    """A camera's frames are timed by the clock; a file's by its timestamps where they
    increase, else by index / frame rate."""
    if self._live:
      return time.monotonic() - self._opened_at
    stamp = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
    if np.isfinite(stamp) and stamp > self._last_time:
      return stamp
    return self.frames_read / (self.frame_rate or 30.0)

  def __iter__(self):
    while True:
      ok, image = self._capture.read()
      if not ok or image is None:
        return
      frame_time = self._frame_time()
      self._last_time = frame_time
      rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
      yield Frame(self.frames_read, frame_time, rgb)
      self.frames_read += 1

  def close(self) -> None:
    self._capture.release()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def open_video(path: str) -> VideoReader:
  """A video file's frames; VideoError when it is missing or OpenCV's FFmpeg cannot decode it."""
  if not os.path.exists(path):
    raise VideoError(f"{path}: no such file")
  if os.path.isdir(path):
    raise VideoError(f"{path}: a folder, not a video file")
  quiet_opencv()
  capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
  if not capture.isOpened():
    capture.release()
    raise VideoError(
      f"{path}: cannot read it as a video (OpenCV's FFmpeg does not recognise the file or "
      "lacks its codec)"
    )
  return VideoReader(capture, path, live=False)


def open_camera(index: int) -> VideoReader:
  """Camera ``index``'s frames; VideoError when it cannot be opened."""
  if index < 0:
    raise VideoError(f"camera {index}: camera numbers start at 0")
  quiet_opencv()
  capture = cv2.VideoCapture(index)
  if not capture.isOpened():
    capture.release()
    raise VideoError(
      f"camera {index}: cannot open it (no such camera, no permission, or in use by another "
      "program)"
    )
  return VideoReader(capture, f"camera {index}", live=True)


def check_writable_video(path: str) -> None:
  """VideoError unless ``path`` has an extension `OverlayWriter` can encode."""
  extension = os.path.splitext(path)[1].lower()
  if extension not in WRITER_CODECS:
    raise VideoError(
      f"{path}: cannot write a {extension or 'extension-less'} video; use one of "
      f"{', '.join(WRITER_CODECS)}"
    )


class OverlayWriter:
  """A video written whole or not at all: frames go to a hidden temporary file beside
  ``path``, which `commit` closes and renames over it (a finished or interrupted run's frames
  so far) and `discard` (or leaving the ``with`` block without commit) removes."""

  def __init__(self, path: str, frame_rate: float, size: tuple[int, int]):
    check_writable_video(path)
    self.path = path
    extension = os.path.splitext(path)[1].lower()
    folder = os.path.dirname(os.path.abspath(path))
    try:
      descriptor, self._temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=f".partial{extension}", dir=folder
      )
    except OSError as error:
      raise VideoError(f"{path}: cannot write ({error})") from None
    os.close(descriptor)
    quiet_opencv()
    self._writer = cv2.VideoWriter(
      self._temporary, cv2.VideoWriter_fourcc(*WRITER_CODECS[extension]), frame_rate, size
    )
    self.frames = 0
    if not self._writer.isOpened():
      self.discard()
      raise VideoError(f"{path}: OpenCV's FFmpeg cannot open a {extension} video for writing")

  def write(self, bgr: np.ndarray) -> None:
    self._writer.write(bgr)
    self.frames += 1

  def commit(self) -> None:
    """Finish the file and rename it over ``path``; VideoError when the encoder left no
    readable video (a full disk: OpenCV's writer reports no errors of its own)."""
    self._writer.release()
    check = cv2.VideoCapture(self._temporary, cv2.CAP_FFMPEG)
    readable = check.isOpened() or self.frames == 0
    check.release()
    if not readable:
      self.discard()
      raise VideoError(f"{self.path}: not written (the encoder's output is not a readable video)")
    os.chmod(self._temporary, 0o644)
    os.replace(self._temporary, self.path)
    self._temporary = None

  def discard(self) -> None:
    self._writer.release()
    if self._temporary is not None:
      try:
        os.remove(self._temporary)
      except FileNotFoundError:
        pass
      self._temporary = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self._temporary is not None:
      self.discard()


def _bgr(colour) -> tuple[int, int, int]:
  return tuple(int(channel) for channel in reversed(colour))


def draw_faces(image: np.ndarray, faces) -> np.ndarray:
  """The frame [H, W, 3] uint8 RGB as BGR (the writer's order) with each tracked face drawn:
  its box (blue) and id, reliable landmarks green, repaired ones red (`overlays`' colours)."""
  canvas = cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR)
  for face in faces:
    x0, y0, x1, y1 = (int(round(float(value))) for value in face.box)
    side = max(x1 - x0, y1 - y0, 1)
    cv2.rectangle(canvas, (x0, y0), (x1, y1), _bgr(overlays.BOX_COLOUR), max(1, side // 150))
    radius = max(1, round(side / 90))
    for (x, y), reliable in zip(np.asarray(face.landmarks), np.asarray(face.reliable)):
      colour = overlays.KEPT_COLOUR if reliable else overlays.FLAGGED_COLOUR
      cv2.circle(canvas, (int(round(float(x))), int(round(float(y)))), radius, _bgr(colour), -1)
    cv2.putText(
      canvas,
      str(face.track_id),
      (x0, max(0, y0 - 4)),
      cv2.FONT_HERSHEY_SIMPLEX,
      max(0.4, side / 300),
      _bgr(overlays.BOX_COLOUR),
      1,
      cv2.LINE_AA,
    )
  return canvas


class JsonLines:
  """JSON objects as lines of a file, or of the standard output for "-", flushed one by one
  (a reader can follow the file as it grows). Each line is one `os.write`; where a write
  fails part-way (a full disk, Ctrl-C between two parts of a long line) the part is cut off
  again, so the file only ever holds whole lines. ``lines``: written so far."""

  def __init__(self, path: str):
    self.path = path
    self.lines = 0
    self._end = 0
    if path == "-":
      self._descriptor, self._owned = 1, False
    else:
      try:
        self._descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
      except OSError as error:
        raise OSError(f"{path}: cannot write ({error.strerror or error})") from None
      self._owned = True

  def write(self, record: dict) -> None:
    data = memoryview((json.dumps(record, separators=(",", ":")) + "\n").encode())
    start = self._end
    try:
      while data:
        data = data[os.write(self._descriptor, data) :]
      self._end = start + len(data.obj)
      self.lines += 1
    except OSError as error:
      self._cut_back(start)
      raise OSError(
        f"{self.path}: stopped after {self.lines} lines ({error.strerror or error})"
      ) from None
    except BaseException:
      self._cut_back(start)
      raise

  def _cut_back(self, end: int) -> None:
    if self._owned:
      os.ftruncate(self._descriptor, end)
      os.lseek(self._descriptor, end, os.SEEK_SET)

  def close(self) -> None:
    if self._owned and self._descriptor is not None:
      os.close(self._descriptor)
      self._descriptor = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

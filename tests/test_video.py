"""Frames in and out for videos: reading files (exactly, through a lossless codec) and cameras,
the overlay video written whole, JSON lines that never end half-way, and errors that name
their file in one line with OpenCV's and FFmpeg's own chatter silenced."""

import errno
import json
import os

import cv2
import numpy as np
import pytest

from msm_jax.data import overlays
from msm_jax.inference import tracking, video

RATE = 25.0


def _frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
  rng = np.random.default_rng(3)
  return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def _write(path, frames, codec: str, rate: float = RATE) -> None:
  """Frames (RGB) into a video file with OpenCV directly: the reader's reference."""
  height, width = frames[0].shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), rate, (width, height))
  assert writer.isOpened()
  for frame in frames:
    writer.write(frame[..., ::-1])
  writer.release()


def test_a_lossless_video_reads_back_exactly_with_its_times(tmp_path):
  frames = _frames(6)
  path = tmp_path / "clip.mkv"
  _write(path, frames, "FFV1")
  with video.open_video(str(path)) as source:
    assert source.frame_count == 6 and source.size == (64, 48)
    assert source.frame_rate == pytest.approx(RATE)
    read = list(source)
  assert [frame.index for frame in read] == list(range(6))
  for frame, expected in zip(read, frames):
    np.testing.assert_array_equal(frame.image, expected)  # RGB, as written
  # Matroska keeps milliseconds: i / 25 s to the nearest ms.
  np.testing.assert_allclose([frame.time for frame in read], np.arange(6) / RATE, atol=1e-3)


def test_an_mp4_reads_every_frame(tmp_path):
  ramp = np.broadcast_to(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 64, 3))
  frames = [np.ascontiguousarray(np.roll(ramp, shift, axis=1)) for shift in range(5)]
  path = tmp_path / "clip.mp4"
  _write(path, frames, "mp4v")
  with video.open_video(str(path)) as source:
    read = list(source)
  assert len(read) == 5 and read[0].image.shape == (48, 64, 3)
  assert all(later.time > earlier.time for earlier, later in zip(read, read[1:]))


@pytest.mark.parametrize("kind", ["missing", "folder", "not a video"])
def test_a_video_that_cannot_be_read_is_one_error_naming_it(tmp_path, capfd, kind):
  path = tmp_path / "clip.mp4"
  if kind == "folder":
    path.mkdir()
  elif kind == "not a video":
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
  message = {"missing": "no such file", "folder": "a folder", "not a video": "cannot read it"}
  with pytest.raises(video.VideoError, match=message[kind]) as raised:
    video.open_video(str(path))
  assert str(path) in str(raised.value)
  assert capfd.readouterr() == ("", "")  # FFmpeg's and OpenCV's own lines silenced


def test_a_camera_that_is_not_there_is_one_error(capfd):
  with pytest.raises(video.VideoError, match="camera 99: cannot open it"):
    video.open_camera(99)
  with pytest.raises(video.VideoError, match="camera -1"):
    video.open_camera(-1)
  assert capfd.readouterr() == ("", "")


def test_the_overlay_video_appears_whole_or_not_at_all(tmp_path):
  frames = _frames(4)
  target = tmp_path / "overlay.mkv"
  with video.OverlayWriter(str(target), RATE, (64, 48)) as writer:
    for frame in frames[:2]:
      writer.write(frame[..., ::-1])
    assert os.listdir(tmp_path) != ["overlay.mkv"] and not target.exists()  # a hidden temporary
    writer.commit()
  assert os.listdir(tmp_path) == ["overlay.mkv"]
  with video.open_video(str(target)) as source:
    read = list(source)
  assert len(read) == 2
  np.testing.assert_array_equal(read[1].image, frames[1])  # FFV1 is lossless
  older = target.read_bytes()
  with pytest.raises(RuntimeError), video.OverlayWriter(str(target), RATE, (64, 48)) as writer:
    writer.write(frames[2][..., ::-1])
    raise RuntimeError("stopped before commit")
  assert os.listdir(tmp_path) == ["overlay.mkv"] and target.read_bytes() == older
  with pytest.raises(video.VideoError, match="cannot write a .gif video"):
    video.OverlayWriter(str(tmp_path / "overlay.gif"), RATE, (64, 48))


def test_json_lines_are_whole_after_a_failed_write(tmp_path, monkeypatch):
  path = tmp_path / "clip.jsonl"
  real_write, calls = os.write, []

  def half_then(error):
    def write(descriptor, data):
      calls.append(len(data))
      if len(calls) == 3:  # the third line: half of it, then the failure
        real_write(descriptor, bytes(data[: len(data) // 2]))
        raise error
      return real_write(descriptor, data)

    return write

  for error, raised in (
    (OSError(errno.ENOSPC, "No space left on device"), OSError),
    (KeyboardInterrupt(), KeyboardInterrupt),
  ):
    calls.clear()
    monkeypatch.setattr(video.os, "write", half_then(error))
    with video.JsonLines(str(path)) as lines:
      lines.write({"frame": 0, "faces": []})
      lines.write({"frame": 1, "faces": [{"id": 0}]})
      with pytest.raises(raised) as caught:
        lines.write({"frame": 2, "faces": [{"id": 0, "landmarks": [[1.5, 2.5]] * 68}]})
    monkeypatch.undo()
    assert lines.lines == 2
    text = path.read_text()
    assert text.endswith("\n") and [json.loads(line)["frame"] for line in text.splitlines()] == [
      0,
      1,
    ]
    if raised is OSError:
      assert str(path) in str(caught.value) and "after 2 lines" in str(caught.value)


def test_json_lines_to_the_standard_output(capfd):
  with video.JsonLines("-") as lines:
    lines.write({"frame": 0, "faces": []})
  assert capfd.readouterr().out == '{"frame":0,"faces":[]}\n'


def test_the_overlay_draws_landmarks_and_box_in_the_writers_colour_order():
  face = tracking.TrackedFace(
    track_id=0,
    box=np.array([10.0, 10.0, 50.0, 50.0], np.float32),
    landmarks=np.array([[20.0, 20.0], [40.0, 30.0]], np.float32),
    raw_landmarks=np.zeros((2, 2), np.float32),
    scores=np.ones(2, np.float32),
    reliable=np.array([True, False]),
    confidence=1.0,
    detected=False,
    refined=False,
  )
  drawn = video.draw_faces(np.zeros((64, 64, 3), np.uint8), [face])  # BGR
  assert tuple(drawn[20, 20][::-1]) == overlays.KEPT_COLOUR  # row y=20, column x=20
  assert tuple(drawn[30, 40][::-1]) == overlays.FLAGGED_COLOUR
  assert tuple(drawn[30, 10][::-1]) == overlays.BOX_COLOUR  # the left edge
  assert tuple(drawn[30, 25]) == (0, 0, 0)

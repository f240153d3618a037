"""How a face moved between two video frames, from the pixels alone: pyramidal Lucas-Kanade
optical flow of points on the face (OpenCV's `calcOpticalFlowPyrLK`), each point checked
forward and back, and the similarity most of them agree on (RANSAC).

The tracker (`tracking.py`) runs the landmark network on a face every ``network_every``
frames and between them carries the face's landmarks by this similarity: a flow of 68 points
costs about a millisecond, a network pass tens of them. A similarity rather than one flow per
landmark: the jaw and brow landmarks lie on edges, where Lucas-Kanade slides along the edge
(the aperture problem), while the face as a whole is pinned by its corners (eyes, nostrils,
mouth). A changing expression is carried rigidly until the next network frame.

A motion is refused (None; the tracker runs the network instead) where too few points agree
on one: a cut, a face covered or turned away, blur. The points are the face's reliable
landmarks: one under an occluder moves with the occluder.
"""

from __future__ import annotations

import cv2
import numpy as np

WINDOW = 21  # pixels, Lucas-Kanade's window at each pyramid level
# Pyramid levels above the frame: a point may move up to about WINDOW / 2 x 2^LEVELS pixels
# (~80) between two frames.
LEVELS = 3
# A point whose flow back lands further than this from where it started is not followed.
# Lucas-Kanade's own error on a textured point is a small fraction of a pixel.
MAX_ROUND_TRIP = 1.0  # pixels
# The similarity's inliers: points it carries to within this of their flow.
RANSAC_TOLERANCE = 2.0  # pixels
MIN_AGREEING = 0.5  # share of the points that must be followed and agree on the similarity
MIN_POINTS = 6  # fewer points than this never make a motion
_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)


def grey(frame: np.ndarray) -> np.ndarray:
  """[H, W] uint8 luminance of an [H, W, 3] uint8 RGB frame, what the flow reads."""
  return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _flow(source: np.ndarray, target: np.ndarray, points: np.ndarray):
  moved, found, _ = cv2.calcOpticalFlowPyrLK(
    source, target, points, None, winSize=(WINDOW, WINDOW), maxLevel=LEVELS, criteria=_CRITERIA
  )
  return moved, found.ravel().astype(bool)


def similarity_between(previous: np.ndarray, current: np.ndarray, points) -> np.ndarray | None:
  """[3, 3] the similarity (turn, uniform scale, shift) from pixels of ``previous`` to pixels
  of ``current`` (grey [H, W] uint8 frames) that carries the points [N, 2] (pixels of
  ``previous``, integers at pixel centres, as the landmarks); None where fewer than
  max(MIN_POINTS, MIN_AGREEING x N) points are followed both ways and agree on it."""
  start = np.ascontiguousarray(np.asarray(points, np.float32).reshape(-1, 1, 2))
  needed = max(MIN_POINTS, MIN_AGREEING * len(start))
  if len(start) < needed or not np.all(np.isfinite(start)):
    return None
  moved, found = _flow(previous, current, start)
  back, found_back = _flow(current, previous, moved)
  round_trip = np.linalg.norm((back - start).reshape(-1, 2), axis=-1)
  followed = found & found_back & (round_trip <= MAX_ROUND_TRIP)
  if followed.sum() < needed:
    return None
  matrix, inliers = cv2.estimateAffinePartial2D(
    start[followed], moved[followed], method=cv2.RANSAC, ransacReprojThreshold=RANSAC_TOLERANCE
  )
  if matrix is None or inliers is None or inliers.sum() < needed:
    return None
  return np.vstack([matrix.astype(np.float64), [0.0, 0.0, 1.0]])

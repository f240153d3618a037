"""Speed of the synthetic face generator on one CPU core (msm_jax/data/synthetic.py).

  python benchmarks/bench_synthetic.py [--faces 300] [--repeats 3]

Prints a Markdown table of faces per second at 128 and 256 pixels, without occluders
(occlusion_prob=0) and with them (occlusion_prob=1). The other settings are the defaults:
clutter, blur, noise and lighting stay on. The process is pinned to one core where the OS
allows it. Each cell is the best of --repeats runs, because other processes on a shared
machine only ever slow it down.
"""

import argparse
import os
import platform
import time

import numpy as np
import PIL

from msm_jax.data import synthetic


def faces_per_second(config: synthetic.SyntheticConfig, faces: int, repeats: int) -> float:
  synthetic.render_face(0, 0, config)  # warm the caches (spline stencils, tables)
  best = float("inf")
  for repeat in range(repeats):
    start = time.perf_counter()
    for index in range(faces):
      synthetic.render_face(repeat + 1, index, config)
    best = min(best, time.perf_counter() - start)
  return faces / best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--faces", type=int, default=300, help="faces per timed run at 128 px")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  pinned = "not pinned"
  if hasattr(os, "sched_setaffinity"):
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    pinned = f"pinned to core {core}"

  print(
    f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
    f"{os.cpu_count()} CPUs ({pinned}); Python {platform.python_version()}, "
    f"NumPy {np.__version__}, Pillow {PIL.__version__}"
  )
  print()
  print("| image size | faces/s, no occluders | faces/s, with occluders |")
  print("|---|---|---|")
  for size in (128, 256):
    faces = max(10, args.faces * 128 // size)
    rates = [
      faces_per_second(
        synthetic.SyntheticConfig(image_size=size, occlusion_prob=p), faces, args.repeats
      )
      for p in (0.0, 1.0)
    ]
    print(f"| {size} x {size} | {rates[0]:.0f} | {rates[1]:.0f} |")


if __name__ == "__main__":
  main()

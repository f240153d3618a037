"""``tfds build`` for the msm_* builders, without TensorFlow (docs/tfds.md).

  python -m msm_jax.data.tfds build msm_300w --config crop256 \\
      --manual_dir /data/300W --data_dir ~/tensorflow_datasets

Takes every flag of ``tfds build`` (``--help``) and runs its own code
(``tensorflow_datasets.scripts.cli.build``). The ``tfds`` command itself imports TensorFlow
at start-up in tensorflow-datasets 4.9.10 (its ``convert_format`` command parses
``tf.train.Example``), although building these datasets does not use it; with TensorFlow
installed, ``tfds build msm_300w --imports msm_jax.data.tfds.builders ...`` is the same.
"""

import sys

from absl import app
from tensorflow_datasets.scripts.cli import build, cli_utils

from msm_jax.data.images import ImageReadError
from msm_jax.data.records import AnnotationError
from msm_jax.data.tfds import builders  # registers the msm_* names

COMMAND = "build"


def _parse(argv: list[str]) -> build.Args:
  if argv[1:2] in (["-h"], ["--help"]):
    print(__doc__)
    raise SystemExit(0)
  if argv[1:2] != [COMMAND]:
    raise SystemExit(
      f"usage: python -m msm_jax.data.tfds {COMMAND} <dataset> [tfds build flags]; "
      f"datasets: {', '.join(sorted(builders.BUILDERS))}"
    )
  parse = cli_utils.make_flags_parser(build.Args, description=__doc__)
  return parse([f"{argv[0]} {COMMAND}", *argv[2:]])


def _build(args: build.Args) -> None:
  try:
    args.execute()
  # A release that cannot be read: the readers name the file; TFDS asserts on a missing
  # --manual_dir, with the builder's MANUAL_DOWNLOAD_INSTRUCTIONS.
  except (FileNotFoundError, AnnotationError, ImageReadError, AssertionError) as error:
    raise SystemExit(f"error: {error}") from None


def main() -> None:
  app.run(_build, argv=sys.argv, flags_parser=_parse)


if __name__ == "__main__":
  main()

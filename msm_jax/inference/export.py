"""Algorithm 2 as a standalone artefact: the inference pipeline (`pipeline.make_inference_fn`)
with its trained weights, serialised with `jax.export` (StableHLO) to one file that runs
anywhere `jax` is installed, without msm-jax, Flax or the model code.

The exported function is

    f(images uint8 [B, H, W, 3], boxes float32 [B, 4]) -> {
        "landmarks" [B, L, 2] float32   final (after the shape repair, Sec. III-C),
        "hourglass_landmarks" [B, L, 2] before the repair,
        "scores" [B, L] float32          normalised Eq. 9 scores,
        "reliable" [B, L] bool           scores above the Table IX thresholds,
        "theta" [B, 2, 3] float32        the GDNN's warp (Eq. 1; identity when ST is off)}

with the pipeline's conventions (`msm_jax/__init__.py`): landmarks are 0-based pixel-centre
(x, y) in image pixels; boxes are the crop boxes x0, y0, x1, y1 (pixel edges) the pipeline
takes, i.e. the face's landmark-like box grown by `config.data.box_margin` and squared
(`prediction.py` makes them). The weights, the shape dictionary and the thresholds are
closed over: constants inside the StableHLO (convolution kernels that float16 holds exactly,
as in a package written with `--kernel_dtype float16`, are embedded as float16 and converted
inside: half the size, the same values). XLA compiles kernels with constant weights a
little differently from the live ones (weights as arguments), so the outputs equal the live
pipeline's to float32 rounding, not bit for bit (tests/test_export.py).

Shapes: by default B, H and W are symbolic (`jax.export.symbolic_shape`), so one artefact
serves every batch and image size. The batch is bounded (B <= `max_batch`, checked by the
artefact itself) because `shape_dictionary.reconstruct` chooses between one pass and chunks
of 32 faces with a Python comparison on B, which a symbolic B can only answer under such a
bound; `ExportedPipeline` splits larger batches.

File layout (version 1), readable with the standard library and jax alone:

    line 1  b"msm-jax-exported 1\\n"
    line 2  one line of JSON: the header (format, versions, platforms, input and output
            signatures, constraints, max_batch, num_landmarks, sha256 of the payload, and
            what the exporter added, e.g. the pipeline options)
    rest    `jax.export.Exported.serialize()` bytes

    with open(path, "rb") as file:
      file.readline(); header = json.loads(file.readline())
      exported = jax.export.deserialize(bytearray(file.read()))
    outputs = exported.call(images, boxes)

jax's serialisation needs the `flatbuffers` package. An artefact loads in the jax version
that wrote it and in later ones within jax.export's compatibility window (6 months).

  python -m msm_jax.inference.export --model pretrained/ --out pretrained/msm_pipeline.jaxexport
"""

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

import msm_jax
from msm_jax import files
from msm_jax.inference import pipeline, prediction, pretrained

FORMAT = "msm-jax-exported"
FORMAT_VERSION = 1
MAGIC = f"{FORMAT} {FORMAT_VERSION}\n".encode()
INPUT_NAMES = ("images", "boxes")
OUTPUT_NAMES = ("landmarks", "hourglass_landmarks", "scores", "reliable", "theta")
# `shape_dictionary.reconstruct` runs batches of at most 32 faces in one pass: the largest
# bound under which its `batch <= 32` test is decidable for a symbolic batch.
MAX_SYMBOLIC_BATCH = 32
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


class ExportFileError(ValueError):
  """An exported-pipeline file is unreadable, corrupt, or not in this format."""


def _input_specs(image_size, batch, max_batch):
  """ShapeDtypeStructs for (images, boxes): symbolic where a size is None."""
  if batch is not None and (int(batch) != batch or batch < 1):
    raise ValueError(f"batch must be a positive integer or None (symbolic), got {batch!r}")
  if image_size is not None and (
    len(image_size) != 2 or any(int(size) != size or size < 1 for size in image_size)
  ):
    raise ValueError(
      f"image_size must be (height, width) positive integers or None (symbolic), got {image_size!r}"
    )
  if batch is None and not 1 <= max_batch <= MAX_SYMBOLIC_BATCH:
    raise ValueError(
      f"max_batch must be in [1, {MAX_SYMBOLIC_BATCH}] for a symbolic batch "
      f"(see the module docstring), got {max_batch!r}"
    )
  height, width = ("h", "w") if image_size is None else map(int, image_size)
  spec = f"{'b' if batch is None else int(batch)}, {height}, {width}"
  constraints = (f"b <= {max_batch}",) if batch is None else ()
  b, h, w = jax_export.symbolic_shape(spec, constraints=constraints)
  return (jax.ShapeDtypeStruct((b, h, w, 3), jnp.uint8), jax.ShapeDtypeStruct((b, 4), jnp.float32))


def _used_variables(variables: dict, options: pipeline.PipelineOptions) -> dict:
  """The entries of `variables` the pipeline reads with these options: closed-over arrays are
  embedded in the artefact even when unused (e.g. 1.45 MB of GDNN weights with ST off)."""
  heatmaps = options.landmark_output == "heatmaps"
  upright = options.recrop_passes > 0 and options.upright_recrop  # its roll: the dictionary
  names = (
    ["generator"] * options.use_spatial_transformer
    + [options.landmark_stage]
    + ["thresholds"] * heatmaps
    + ["dictionary"] * ((heatmaps and options.use_shape_reconstruction) or upright)
  )
  missing = [name for name in names if name not in variables]
  if missing:
    raise ValueError(
      f"variables lacks {missing}, which the pipeline options "
      f"(ST {options.use_spatial_transformer}, SR "
      f"{options.use_shape_reconstruction}, {options.landmark_stage}) need"
    )
  return {name: variables[name] for name in names}


def _as_float16_where_exact(tree):
  """Float32 convolution kernels that float16 represents exactly, as float16; the rest as is."""

  def compact(path, value):
    if not jax.tree_util.keystr(path).endswith("['kernel']"):
      return value
    value = np.asarray(value)
    half = value.astype(np.float16)
    return half if np.array_equal(half.astype(value.dtype), value) else value

  return jax.tree_util.tree_map_with_path(compact, tree)


_HALF_DTYPES = (jnp.bfloat16, jnp.float16)


def exportable(network):
  """``network`` as the artefact runs it: XLA's kernels (jax.export refuses the oneDNN custom
  calls: they carry no stability guarantee, and the artefact must run where the extension is
  absent), and float32 compute where the network computes in a half type (the artefact
  serves any platform, and CPUs without bfloat16 units run it no faster than float32)."""
  if getattr(network, "kernels", "xla") != "xla":
    network = network.clone(kernels="xla")
  if any(getattr(network, "dtype", None) == dtype for dtype in _HALF_DTYPES):
    network = network.clone(dtype=jnp.float32)
  return network


def export_pipeline(
  generator,
  landmark_model,
  variables: dict,
  options: pipeline.PipelineOptions,
  image_size: tuple[int, int] | None = None,
  batch: int | None = None,
  platforms: Sequence[str] = ("cpu",),
  max_batch: int = MAX_SYMBOLIC_BATCH,
) -> jax_export.Exported:
  """Lower `pipeline.make_inference_fn` with `variables` baked in to a jax.export.Exported.

  generator, landmark_model, variables, options: as for `pipeline.make_inference_fn`.
  image_size: (H, W) to export for one image size only; None = any size (symbolic).
  batch: B to export for one batch size only; None = any B in [1, max_batch] (symbolic).
  platforms: the backends the artefact can run on ("cpu", "cuda", ...); more than one
    lowers the computation once per platform into the same artefact.
  """
  unknown = sorted(set(platforms) - set(PLATFORMS))
  if not platforms or unknown:
    raise ValueError(f"platforms must be a non-empty subset of {PLATFORMS}, got {platforms!r}")
  specs = _input_specs(image_size, batch, max_batch)
  stored = _as_float16_where_exact(_used_variables(variables, options))
  infer = pipeline.make_inference_fn(generator, exportable(landmark_model), options)

  def msm_pipeline(images, boxes):
    # Staged (lax, not NumPy's astype): the float16 constants are what the artefact embeds.
    as_float32 = lambda value: (
      jax.lax.convert_element_type(value, jnp.float32) if value.dtype == np.float16 else value
    )
    outputs = infer(jax.tree.map(as_float32, stored), images, boxes)
    return {name: outputs[name] for name in OUTPUT_NAMES}

  try:
    return jax_export.export(jax.jit(msm_pipeline), platforms=tuple(platforms))(*specs)
  except jax.errors.InconclusiveDimensionOperation as error:
    raise ValueError(
      f"export_pipeline: the pipeline cannot be exported for symbolic shapes "
      f"{[spec.shape for spec in specs]} ({str(error).splitlines()[0]}); "
      f"give image_size=(H, W) and/or batch=B to export fixed sizes"
    ) from None


def export_from_trained(model, options: pipeline.PipelineOptions, **kwargs) -> jax_export.Exported:
  """`export_pipeline` for a `pipeline.TrainedModel` (modules + variables); kwargs as there."""
  landmark_model = model.networks[options.landmark_stage]
  return export_pipeline(model.generator, landmark_model, model.variables, options, **kwargs)


def _signature(avals, names) -> dict:
  """{name: {"shape": [int or symbol name], "dtype": str}}, JSON-ready."""
  return {
    name: {
      "shape": [int(d) if isinstance(d, int) else str(d) for d in aval.shape],
      "dtype": aval.dtype.name,
    }
    for name, aval in zip(names, avals)
  }


def _batch_bound(batch) -> int | None:
  """The B <= bound of a symbolic batch, found by asking which comparison is decidable."""
  if not jax_export.is_symbolic_dim(batch):
    return None
  for bound in range(1, MAX_SYMBOLIC_BATCH + 1):
    try:
      if batch <= bound:
        return bound
    except jax.errors.InconclusiveDimensionOperation:
      continue
  return None


def _header(exported: jax_export.Exported, payload: bytes, metadata: dict | None) -> dict:
  flat_index = jax.tree.unflatten(exported.out_tree, range(len(exported.out_avals)))
  outputs = _signature(
    [exported.out_avals[flat_index[name]] for name in OUTPUT_NAMES], OUTPUT_NAMES
  )
  max_batch = _batch_bound(exported.in_avals[0].shape[0])
  return {
    "format": FORMAT,
    "format_version": FORMAT_VERSION,
    "msm_jax_version": msm_jax.__version__,
    "jax_version": jax.__version__,
    "platforms": list(exported.platforms),
    "inputs": _signature(exported.in_avals, INPUT_NAMES),
    "constraints": [] if max_batch is None else [f"b <= {max_batch}"],
    "max_batch": max_batch,
    "outputs": outputs,
    "num_landmarks": outputs["landmarks"]["shape"][1],
    "payload_sha256": hashlib.sha256(payload).hexdigest(),
    "metadata": metadata or {},
  }


def save_exported(path: str, exported: jax_export.Exported, metadata: dict | None = None) -> dict:
  """Write `exported` to `path` (header + serialised StableHLO); returns the header.

  exported: as `export_pipeline` returns it (a deserialised one has lost its batch bound:
    jax does not serialise shape constraints, so its header would miss max_batch).
  metadata: JSON-serialisable extras recorded in the header (e.g. pipeline options, source).
  """
  payload = bytes(exported.serialize())
  header = _header(exported, payload, metadata)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with files.atomic_write(path, "wb") as file:
    file.write(MAGIC)
    file.write(json.dumps(header).encode() + b"\n")
    file.write(payload)
  return header


def _read(path: str) -> tuple[dict, bytes]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"exported pipeline not found: {path}")
  with open(path, "rb") as file:
    magic = file.readline()
    if magic != MAGIC:
      if magic.startswith(FORMAT.encode()):
        raise ExportFileError(
          f"{path}: format {magic.decode(errors='replace').strip()!r} "
          f"is not supported (this code reads {MAGIC.decode().strip()!r})"
        )
      raise ExportFileError(
        f"{path}: not an msm-jax exported pipeline (no {MAGIC.decode().strip()!r} first line)"
      )
    try:
      header = json.loads(file.readline())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
      raise ExportFileError(f"{path}: corrupt header ({error})") from None
    payload = file.read()
  if not isinstance(header, dict) or "payload_sha256" not in header:
    raise ExportFileError(f"{path}: corrupt header (no payload_sha256)")
  if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
    raise ExportFileError(
      f"{path}: corrupt or truncated payload ({len(payload)} bytes; "
      f"its sha256 differs from the header's)"
    )
  return header, payload


def read_header(path: str) -> dict:
  """The header of an exported-pipeline file (checks the format and the payload's hash)."""
  return _read(path)[0]


@dataclasses.dataclass(frozen=True, eq=False)
class ExportedPipeline:
  """A loaded artefact: `pipeline_fn(images, boxes) -> dict of NumPy arrays`.

  images: [B, H, W, 3] uint8; boxes: [B, 4] crop boxes (see the module docstring), checked
  like `prediction.predict_images`'s (`prediction.check_boxes`): a NaN box, or one that
  leaves the image, is a ValueError naming the box, not NaN or blank-crop landmarks.
  Batches above the artefact's max_batch run in chunks.
  """

  path: str
  header: dict
  exported: jax_export.Exported

  @functools.cached_property
  def _call(self):
    return jax.jit(self.exported.call)  # compiled once per input shape

  def _check(self, images: np.ndarray, boxes: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(
        f"{self.path}: images must be uint8 [B, H, W, 3], got {images.dtype} {images.shape}"
      )
    if boxes.shape != (images.shape[0], 4) or images.shape[0] < 1:
      raise ValueError(
        f"{self.path}: boxes must be [B, 4] with B = {images.shape[0]} "
        f"(>= 1) like the images, got {boxes.shape}"
      )
    for name, array in (("images", images), ("boxes", boxes)):
      for axis, want in enumerate(self.header["inputs"][name]["shape"]):
        if isinstance(want, int) and array.shape[axis] != want:
          raise ValueError(
            f"{self.path}: exported for {name} of shape "
            f"{self.header['inputs'][name]['shape']}, got {array.shape}"
          )
    prediction.check_boxes(boxes, images.shape[1:3], self.path)

  def __call__(self, images, boxes) -> dict[str, np.ndarray]:
    images, boxes = np.asarray(images), np.asarray(boxes, np.float32)
    self._check(images, boxes)
    chunk = self.header["max_batch"] or images.shape[0]
    parts = []
    for start in range(0, images.shape[0], chunk):
      try:
        outputs = self._call(images[start : start + chunk], boxes[start : start + chunk])
      except ValueError as error:  # e.g. run on a platform it was not exported for
        raise ValueError(f"{self.path}: {error}") from None
      parts.append(jax.device_get(outputs))
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def load_exported(path: str) -> ExportedPipeline:
  """Read and deserialise an artefact written by `save_exported`.

  Raises FileNotFoundError, or ExportFileError (a ValueError naming the file) for a file of
  another format, a corrupt header or payload, or one this jax cannot deserialise.
  """
  header, payload = _read(path)
  try:
    exported = jax_export.deserialize(bytearray(payload))
  except Exception as error:  # flatbuffers / version errors surface as many types
    raise ExportFileError(
      f"{path}: cannot deserialise the StableHLO payload with jax "
      f"{jax.__version__} (written by jax {header.get('jax_version')}): "
      f"{type(error).__name__}: {error}"
    ) from None
  return ExportedPipeline(path, header, exported)


def main(argv: Sequence[str] | None = None) -> dict:
  """`python -m msm_jax.inference.export`: export a pretrained package
  (`msm_jax.inference.pretrained`)."""
  parser = argparse.ArgumentParser(
    description="Export the MSM pipeline with its weights (jax.export StableHLO)."
  )
  parser.add_argument("--model", required=True, help="pretrained package folder")
  parser.add_argument("--out", required=True, help="artefact file to write")
  parser.add_argument(
    "--platforms", default="cpu", help="comma list of cpu, cuda, rocm, tpu (default: cpu)"
  )
  parser.add_argument(
    "--image-size",
    type=int,
    nargs=2,
    metavar=("H", "W"),
    help="export for one image size only (default: any)",
  )
  parser.add_argument("--batch", type=int, help="export for one batch size only")
  parser.add_argument(
    "--max-batch",
    type=int,
    default=MAX_SYMBOLIC_BATCH,
    help="largest batch of one call when the batch is symbolic",
  )
  args = parser.parse_args(argv)
  package = pretrained.load_pretrained(args.model)
  start = time.perf_counter()
  exported = export_from_trained(
    package.model,
    package.options,
    image_size=args.image_size,
    batch=args.batch,
    platforms=tuple(args.platforms.split(",")),
    max_batch=args.max_batch,
  )
  seconds = time.perf_counter() - start
  header = save_exported(
    args.out,
    exported,
    {
      "source": os.path.abspath(args.model),
      "pipeline_options": dataclasses.asdict(package.options),
    },
  )
  summary = {
    "out": args.out,
    "bytes": os.path.getsize(args.out),
    "export_seconds": round(seconds, 1),
    "platforms": header["platforms"],
    "inputs": ", ".join(
      f"{name} {spec['dtype']}{spec['shape']}" for name, spec in header["inputs"].items()
    ),
    "max_batch": header["max_batch"],
  }
  print(json.dumps(summary))
  return summary


if __name__ == "__main__":
  main(sys.argv[1:])

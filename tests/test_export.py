"""The jax.export artefact of the pipeline (msm_jax/inference/export.py): the same landmarks as
the live pipeline at several sizes from one artefact, the file round trip, loading without
msm-jax, the CLI, and clear errors for bad files and inputs. Tiny random models keep it fast."""

import json
import os
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.inference import export, pipeline
from msm_jax.models.gdnn import GDNN
from msm_jax.models.gdnn import IDENTITY_THETA as GDNN_IDENTITY
from msm_jax.models.hourglass import StackedHourglass
from tests import float_checks, tiny_models

L = 68
MAX_BATCH = 3  # small, so that a batch of 6 exercises ExportedPipeline's chunking
SIZE_A = (3, 90, 120)  # (batch, height, width)
SIZE_B = (2, 70, 64)
OPTIONS = pipeline.PipelineOptions(num_neighbours=5)
# Eq. 9's score sums a spatial softmax over the 64 x 64 map: its float32 rounding is within
# ~4096 eps = 4.9e-4 whichever kernels compute it; flags are compared this far from a threshold.
SCORE_TOLERANCE = float_checks.sum_tolerance(64 * 64)
SCORE_MARGIN = 4 * SCORE_TOLERANCE


def _random_variables(module, rng):
  """Random weights and BatchNorm statistics for `module`, without running its init (slow to
  compile on 2 busy cores): shapes from eval_shape, values drawn per kind of leaf."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 128, 128, 3)))

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == "kernel":
      return rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
    if name in ("scale", "var"):
      return rng.uniform(0.5, 1.5, shape)
    return rng.normal(0, 0.1, shape)  # bias, mean

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  return jax.tree.map(lambda value: jnp.asarray(value, jnp.float32), variables)


def _inputs(rng, batch, height, width):
  images = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
  centres = rng.uniform(0.4, 0.6, (batch, 2)) * [width, height]
  sides = rng.uniform(0.5, 0.9, (batch, 1)) * min(height, width)
  return images, np.concatenate([centres - sides / 2, centres + sides / 2], 1).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
  """Random-init GDNN + hourglass, the live pipeline's outputs at two sizes, one artefact."""
  generator = GDNN(width_multiplier=0.25)
  hourglass = StackedHourglass(num_landmarks=L, width=8, depth=2, stem_widths=(4, 4, 8))
  rng = np.random.default_rng(0)
  generator_variables = _random_variables(generator, rng)
  # A theta near the identity that varies a little from face to face (Eq. 1).
  conv11 = generator_variables["params"]["conv11"]
  conv11["kernel"] = 0.02 * conv11["kernel"]
  conv11["bias"] = jnp.asarray(GDNN_IDENTITY) + 0.05 * conv11["bias"]
  variables = {
    "generator": generator_variables,
    "hourglass": _random_variables(hourglass, rng),
    "dictionary": jnp.asarray(tiny_models.face_dictionary(rng)),
    "thresholds": jnp.zeros(L),
  }
  live = pipeline.make_inference_fn(generator, hourglass, OPTIONS)
  inputs = {size: _inputs(rng, *size) for size in (SIZE_A, SIZE_B)}
  # Per landmark, a threshold in the widest gap between these 5 faces' scores, at least
  # SCORE_MARGIN from every score, so that rounding cannot flip a flag (Table IX's values suit
  # a trained model's maps, not random ones).
  scores = np.concatenate([live(variables, *inputs[size])["scores"] for size in inputs])
  variables["thresholds"] = jnp.asarray(float_checks.thresholds_between(scores, SCORE_MARGIN))
  expected = {size: jax.device_get(live(variables, *inputs[size])) for size in inputs}
  exported = export.export_pipeline(generator, hourglass, variables, OPTIONS, max_batch=MAX_BATCH)
  model = pipeline.TrainedModel(
    generator, {"hourglass": hourglass}, variables, frozenset({"stgan", "hourglass"})
  )
  return types.SimpleNamespace(
    model=model, inputs=inputs, expected=expected, exported=exported, results={}
  )


def _exported_at(tiny, size):
  """exported.call at one size, computed once per module."""
  if size not in tiny.results:
    tiny.results[size] = jax.device_get(tiny.exported.call(*tiny.inputs[size]))
  return tiny.results[size]


def _assert_matches_live(got, expected):
  """Weights baked in as constants compile to other kernels than the live (weights as
  arguments) ones, so the two round differently. The flags are exact: every score is
  SCORE_MARGIN from its threshold (the fixture's choice). The repair of random maps
  extrapolates to hundreds of pixels outside the image, where rounding differences grow with
  the coordinates, hence the relative tolerance on the final landmarks."""
  np.testing.assert_array_equal(got["reliable"], expected["reliable"])
  np.testing.assert_allclose(got["theta"], expected["theta"], atol=1e-5)
  np.testing.assert_allclose(got["scores"], expected["scores"], atol=SCORE_TOLERANCE)
  np.testing.assert_allclose(got["hourglass_landmarks"], expected["hourglass_landmarks"], atol=1e-3)
  np.testing.assert_allclose(got["landmarks"], expected["landmarks"], rtol=2e-4, atol=1e-2)


@pytest.mark.parametrize("size", [SIZE_A, SIZE_B])
def test_one_symbolic_artefact_matches_live_pipeline_at_two_sizes(tiny, size):
  assert [str(dim) for dim in tiny.exported.in_avals[0].shape] == ["b", "h", "w", "3"]
  expected = tiny.expected[size]
  # The fixture is informative: both reliable and repaired landmarks, repairs that move.
  assert 0 < expected["reliable"].mean() < 1
  moved = np.abs(expected["landmarks"] - expected["hourglass_landmarks"]).max(-1)
  assert moved[~expected["reliable"]].max() > 0.1
  got = _exported_at(tiny, size)
  assert set(got) == set(export.OUTPUT_NAMES)
  _assert_matches_live(got, expected)


def test_float16_exact_kernels_are_embedded_as_float16(tiny):
  """Kernels that float16 holds exactly (a `--kernel_dtype float16` package) are embedded as
  float16: 2 bytes fewer per kernel value, and the same outputs as the live pipeline on those
  weights."""
  half = lambda path, value: (
    jnp.asarray(value, jnp.float16).astype(jnp.float32)
    if jax.tree_util.keystr(path).endswith("['kernel']")
    else value
  )
  variables = jax.tree_util.tree_map_with_path(half, tiny.model.variables)
  generator, hourglass = tiny.model.generator, tiny.model.networks["hourglass"]
  exported = export.export_pipeline(generator, hourglass, variables, OPTIONS, max_batch=MAX_BATCH)
  kernel_values = sum(
    value.size
    for path, value in jax.tree_util.tree_leaves_with_path(variables)
    if jax.tree_util.keystr(path).endswith("['kernel']")
  )
  saved = len(tiny.exported.serialize()) - len(exported.serialize())
  assert abs(saved - 2 * kernel_values) < 0.05 * 2 * kernel_values
  live = pipeline.make_inference_fn(generator, hourglass, OPTIONS)
  inputs = tiny.inputs[SIZE_A]
  expected = jax.device_get(live(variables, *inputs))
  _assert_matches_live(jax.device_get(exported.call(*inputs)), expected)


def test_file_round_trip_header_and_chunked_batches(tiny, tmp_path):
  path = str(tmp_path / "msm.jaxexport")
  header = export.save_exported(path, tiny.exported, {"note": "tiny"})
  assert header == export.read_header(path)
  assert header["inputs"] == {
    "images": {"shape": ["b", "h", "w", 3], "dtype": "uint8"},
    "boxes": {"shape": ["b", 4], "dtype": "float32"},
  }
  assert header["outputs"]["landmarks"] == {"shape": ["b", L, 2], "dtype": "float32"}
  assert header["outputs"]["reliable"]["dtype"] == "bool"
  assert (header["num_landmarks"], header["max_batch"], header["constraints"]) == (
    L,
    MAX_BATCH,
    [f"b <= {MAX_BATCH}"],
  )
  assert header["msm_jax_version"] == __import__("msm_jax").__version__
  assert header["platforms"] == ["cpu"] and header["metadata"] == {"note": "tiny"}

  loaded = export.load_exported(path)
  images, boxes = tiny.inputs[SIZE_A]
  reference = _exported_at(tiny, SIZE_A)
  # 6 faces > max_batch 3: two chunks, the second in reverse order, so a chunking that lost
  # or reordered faces would show.
  order = np.array([0, 1, 2, 2, 1, 0])
  got = loaded(images[order], boxes[order])
  for name in export.OUTPUT_NAMES:
    np.testing.assert_allclose(got[name], reference[name][order], atol=1e-5, err_msg=name)
  np.testing.assert_array_equal(got["reliable"], reference["reliable"][order])


def test_runs_in_a_process_without_msm_jax(tiny, tmp_path):
  path = str(tmp_path / "msm.jaxexport")
  export.save_exported(path, tiny.exported)
  images, boxes = tiny.inputs[SIZE_A]
  np.savez(tmp_path / "inputs.npz", images=images, boxes=boxes)
  # The file layout of the module docstring, read with json + jax + numpy only; msm_jax and
  # flax are made unimportable so that any hidden dependency fails loudly.
  script = textwrap.dedent(f"""
      import sys
      sys.modules["msm_jax"] = sys.modules["flax"] = None
      import json
      import jax, numpy as np
      with open({path!r}, "rb") as file:
        assert file.readline() == b"msm-jax-exported 1\\n"
        header = json.loads(file.readline())
        exported = jax.export.deserialize(bytearray(file.read()))
      inputs = np.load({str(tmp_path / "inputs.npz")!r})
      outputs = exported.call(inputs["images"], inputs["boxes"])
      np.savez({str(tmp_path / "outputs.npz")!r}, **jax.device_get(outputs))
      print(header["num_landmarks"])
      """)
  environment = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
    [sys.executable, "-c", script],
    capture_output=True,
    text=True,
    cwd=tmp_path,
    env=environment,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == str(L)
  standalone = dict(np.load(tmp_path / "outputs.npz"))
  reference = _exported_at(tiny, SIZE_A)
  # The same StableHLO compiled by the same XLA: the same numbers.
  for name in export.OUTPUT_NAMES:
    np.testing.assert_allclose(standalone[name], reference[name], atol=1e-6, err_msg=name)
  _assert_matches_live(standalone, tiny.expected[SIZE_A])


def test_cli_exports_a_pretrained_package_at_fixed_sizes(tiny, tmp_path, monkeypatch):
  package = types.SimpleNamespace(model=tiny.model, options=OPTIONS)  # stands in for a package
  monkeypatch.setattr(export.pretrained, "load_pretrained", lambda directory: package)
  out = str(tmp_path / "fixed.jaxexport")
  batch, height, width = SIZE_A
  summary = export.main(
    [
      "--model",
      str(tmp_path),
      "--out",
      out,
      "--batch",
      str(batch),
      "--image-size",
      str(height),
      str(width),
    ]
  )
  assert summary["bytes"] == os.path.getsize(out) and summary["max_batch"] is None
  header = export.read_header(out)
  assert header["inputs"]["images"]["shape"] == [batch, height, width, 3]
  assert header["metadata"]["pipeline_options"]["num_neighbours"] == OPTIONS.num_neighbours

  loaded = export.load_exported(out)
  images, boxes = tiny.inputs[SIZE_A]
  _assert_matches_live(loaded(images, boxes), tiny.expected[SIZE_A])
  with pytest.raises(ValueError, match=f"{out}: exported for images of shape"):
    loaded(images[:, :-2], boxes)


def test_bad_inputs_give_clear_errors(tiny, tmp_path):
  path = str(tmp_path / "msm.jaxexport")
  export.save_exported(path, tiny.exported)
  loaded = export.load_exported(path)
  images, boxes = tiny.inputs[SIZE_A]
  with pytest.raises(ValueError, match="images must be uint8"):
    loaded(images.astype(np.float32) / 255, boxes)
  with pytest.raises(ValueError, match="boxes must be"):
    loaded(images, boxes[:2])
  with pytest.raises(ValueError, match="platforms"):
    export.export_pipeline(None, None, {}, OPTIONS, platforms=("gpu",))
  with pytest.raises(ValueError, match="max_batch"):
    export.export_pipeline(None, None, {}, OPTIONS, max_batch=64)
  with pytest.raises(ValueError, match="image_size"):
    export.export_pipeline(None, None, {}, OPTIONS, image_size=(90,))
  with pytest.raises(ValueError, match=r"variables lacks \['dictionary'\]"):
    variables = {name: {} for name in ("generator", "hourglass", "thresholds")}
    export.export_pipeline(None, None, variables, OPTIONS)


@pytest.mark.parametrize(
  "box, why",
  [
    ([np.nan, 10.0, 60.0, 70.0], "not finite"),
    ([500.0, 400.0, 560.0, 470.0], "0 % on the image"),  # off a 90 x 120 image
  ],
)
def test_boxes_that_cannot_frame_a_face_are_refused(tiny, tmp_path, box, why):
  # The checks of prediction.predict_images, on the artefact's own entry point: a NaN box would
  # give NaN landmarks, an off-image box landmarks of zeros, both flagged as usual.
  path = str(tmp_path / "msm.jaxexport")
  export.save_exported(path, tiny.exported)
  loaded = export.load_exported(path)
  images, boxes = tiny.inputs[SIZE_A]
  boxes = boxes.copy()
  boxes[1] = box
  with pytest.raises(ValueError, match=f"box 1 .*{why}") as error:
    loaded(images, boxes)
  assert path in str(error.value)


def _corrupt(path, how):
  data = open(path, "rb").read()
  header_end = data.index(b"\n", len(export.MAGIC)) + 1
  if how == "truncated":
    data = data[:-100]
  elif how == "flipped_byte":
    middle = (header_end + len(data)) // 2
    data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
  elif how == "not_an_artefact":
    data = b"PK\x03\x04 some zip file"
  elif how == "newer_version":
    data = data.replace(export.MAGIC, b"msm-jax-exported 2\n", 1)
  elif how == "broken_header":
    data = export.MAGIC + b"{not json\n" + data[header_end:]
  elif how == "garbage_payload":  # a consistent hash, but not a jax.export payload
    payload = b"\x00" * 64
    header = json.loads(data[len(export.MAGIC) : header_end])
    header["payload_sha256"] = __import__("hashlib").sha256(payload).hexdigest()
    data = export.MAGIC + json.dumps(header).encode() + b"\n" + payload
  open(path, "wb").write(data)


@pytest.mark.parametrize(
  "how, message",
  [
    ("truncated", "corrupt or truncated payload"),
    ("flipped_byte", "corrupt or truncated payload"),
    ("not_an_artefact", "not an msm-jax exported pipeline"),
    ("newer_version", "is not supported"),
    ("broken_header", "corrupt header"),
    ("garbage_payload", "cannot deserialise"),
  ],
)
def test_corrupt_file_names_the_file(tiny, tmp_path, how, message):
  path = str(tmp_path / "msm.jaxexport")
  export.save_exported(path, tiny.exported)
  _corrupt(path, how)
  with pytest.raises(export.ExportFileError, match=message) as error:
    export.load_exported(path)
  assert path in str(error.value)


def test_missing_file():
  with pytest.raises(FileNotFoundError, match="nowhere.jaxexport"):
    export.load_exported("/nonexistent/nowhere.jaxexport")


SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")


@pytest.mark.skipif(
  not os.path.exists(os.path.join(SHIPPED, "msm_pipeline.jaxexport")),
  reason="no shipped artefact in pretrained/",
)
def test_shipped_artefact_matches_the_shipped_package():
  from msm_jax.data import synthetic
  from msm_jax.inference import prediction, pretrained

  model = pretrained.load_pretrained(SHIPPED)
  faces = [synthetic.render_face(7, index, dict(image_size=160)) for index in range(2)]
  images = np.stack([face["image"] for face in faces])
  squares = prediction.crop_squares(
    np.stack([face["box"] for face in faces]), model.config.data.box_margin
  ).astype(np.float32)
  # The artefact runs XLA's convolutions: its twin is the live pipeline with XLA's too (on CPU
  # the package's network runs oneDNN's, equal to XLA's within float32 rounding, see
  # test_onednn; the re-crop pass can amplify such rounding into pixels).
  network = export.exportable(model.model.networks[model.options.landmark_stage])
  infer = jax.jit(pipeline.make_inference_fn(model.model.generator, network, model.options))
  live = jax.device_get(infer(model.model.variables, images, squares))
  shipped = export.load_exported(os.path.join(SHIPPED, "msm_pipeline.jaxexport"))(images, squares)
  np.testing.assert_allclose(shipped["hourglass_landmarks"], live["hourglass_landmarks"], atol=1e-3)
  np.testing.assert_allclose(shipped["scores"], live["scores"], atol=SCORE_TOLERANCE)
  # A score within rounding of its real threshold may flip its flag, and then the repair
  # differs: flags are compared where the score is clear, landmarks on faces whose flags agree.
  thresholds = np.asarray(model.model.variables["thresholds"])
  float_checks.assert_flags_equal_where_clear(
    shipped["reliable"], live["reliable"], live["scores"], thresholds, SCORE_MARGIN
  )
  agree = (shipped["reliable"] == live["reliable"]).all(axis=1)
  np.testing.assert_allclose(shipped["landmarks"][agree], live["landmarks"][agree], atol=5e-2)


def _model_card_snippet() -> str:
  card = open(os.path.join(SHIPPED, "MODEL_CARD.md")).read()
  return card.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_model_card_snippet_checks_the_payload(tiny, tmp_path):
  # The documented way to load the artefact without msm-jax, run as written (the path and the
  # inputs substituted): it accepts an intact file and refuses one with a flipped byte.
  path = str(tmp_path / "msm.jaxexport")
  export.save_exported(path, tiny.exported)
  images, boxes = tiny.inputs[SIZE_A]
  np.savez(tmp_path / "inputs.npz", images=images, boxes=boxes)
  snippet = _model_card_snippet().replace("pretrained/msm_pipeline.jaxexport", path)
  script = (
    f"import numpy as np\ninputs = np.load({str(tmp_path / 'inputs.npz')!r})\n"
    'images, boxes = inputs["images"], inputs["boxes"]\n' + snippet + "\nprint('RAN')\n"
  )

  def run():
    return subprocess.run(
      [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )

  intact = run()
  assert intact.returncode == 0 and "RAN" in intact.stdout, intact.stderr[-2000:]
  _corrupt(path, "flipped_byte")
  broken = run()
  assert broken.returncode != 0 and "corrupt" in broken.stderr


def test_the_artefact_runs_xla_kernels_in_float32():
  network = StackedHourglass(num_landmarks=L, width=8, dtype=jnp.bfloat16, kernels="onednn")
  exported_network = export.exportable(network)
  assert (exported_network.kernels, exported_network.dtype) == ("xla", jnp.float32)
  assert (network.kernels, network.dtype) == ("onednn", jnp.bfloat16)  # the original untouched
  plain = StackedHourglass(num_landmarks=L, width=8)
  assert export.exportable(plain) is plain

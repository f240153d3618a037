"""The inference levers benchmark (msm_jax/eval/inference_levers.py): moved boxes by hand, the
weight soup against the leaf-wise mean, and a tiny model's table against its own rows."""

import jax
import numpy as np

from msm_jax.eval import inference_levers
from msm_jax.inference import pretrained
from tests import tiny_models


def test_moved_box_scales_about_the_centre_then_shifts_by_the_box_size():
  box = np.array([10.0, 20.0, 50.0, 100.0])  # centre (30, 60), size (40, 80)
  np.testing.assert_allclose(inference_levers.moved_box(box, 1.0, 0.0, 0.0), box)
  # Half the size about (30, 60), then +0.25 x 40 in x and -0.5 x 80 in y: centre (40, 20).
  np.testing.assert_allclose(inference_levers.moved_box(box, 0.5, 0.25, -0.5), [30, 0, 50, 40])


def test_the_soup_averages_the_landmark_network_and_keeps_the_rest():
  first, second = tiny_models.tiny_pretrained(seed=0), tiny_models.tiny_pretrained(seed=1)
  souped = inference_levers.soup([first, second])
  for got, a, b in zip(
    *(jax.tree.leaves(model.model.variables["hourglass"]) for model in (souped, first, second))
  ):
    np.testing.assert_allclose(got, (np.asarray(a) + np.asarray(b)) / 2, rtol=1e-6, atol=1e-7)
  assert souped.model.variables["dictionary"] is first.model.variables["dictionary"]
  assert souped.model.variables["generator"] is first.model.variables["generator"]
  assert isinstance(souped, pretrained.PretrainedModel) and souped.options == first.options


def test_a_tiny_model_table_has_every_lever_and_its_default_decoder_row():
  model = tiny_models.tiny_pretrained()
  records = tiny_models.face_records(count=2)
  table = inference_levers.levers(model, records, soup_models=[model], log=lambda _: None)
  sigma = model.options.decode_blur_sigma
  assert list(table) == [
    *(label for label, _, _ in inference_levers.DECODERS),
    "package default",
    "7 crops averaged",
    "soup of 2",
  ]
  for pipeline_name in inference_levers.PIPELINES:
    # The package decodes with DARK after a blur of its training sigma: that row is its own.
    assert table[f"DARK, blur {sigma:g}"][pipeline_name] == table["package default"][pipeline_name]
    # A soup of a package with itself is the package.
    np.testing.assert_allclose(
      table["soup of 2"][pipeline_name]["nme"],
      table["package default"][pipeline_name]["nme"],
      rtol=1e-5,
    )
  assert "| 7 crops averaged |" in inference_levers.markdown(table)

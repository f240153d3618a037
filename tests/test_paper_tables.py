"""End to end on a few generated faces with tiny widths: train every stage, then evaluate.

The Flax `train_test.py` pattern: it proves the stages, checkpoints, dictionary and the
evaluation fit together (shapes, names, files), not that the tiny model is any good.
"""

import json
import os

import numpy as np
from PIL import Image

from configs import synthetic as synthetic_config  # noqa: E402
from msm_jax import commands  # noqa: E402
from msm_jax.train import model_io  # noqa: E402


def _tiny_config():
  config = synthetic_config.get_config()
  config.data.train_size, config.data.validation_size, config.data.test_size = 16, 4, 4
  config.stages = "all,resnet,joint"
  config.hourglass.batch_size = config.stgan.batch_size = config.resnet.batch_size = 8
  config.joint.batch_size = 8
  config.hourglass.epochs = config.stgan.epochs = config.resnet.epochs = 1  # 2 steps each
  config.joint.epochs = 1
  config.resnet.width = 0.0625
  config.hourglass.width, config.hourglass.depth = 8, 2
  config.hourglass.stem_widths = (4, 4, 8)
  config.stgan.generator_width, config.stgan.discriminator_width = 0.25, 0.0625
  config.shape.dictionary_size, config.shape.num_neighbours = 12, 5
  config.eval.batch_size = 4
  config.checkpoint.every_steps = 1
  return config


def test_train_all_stages_then_evaluate(tmp_path):
  config, workdir = _tiny_config(), str(tmp_path / "run")
  logs = []
  commands.train_and_evaluate(config, workdir, log=logs.append)
  assert any("[stgan] step 2 eval template_distance_px" in line for line in logs), logs
  # The ST template comes from the training crops (configs/base.py), and is logged.
  assert any(line.startswith("[stgan] template from 16 ground-truth-box crops") for line in logs), (
    logs
  )
  assert any("[hourglass] step 2 eval nme_inter_ocular" in line for line in logs), logs
  assert any("[joint] step 2 eval nme_inter_ocular" in line for line in logs), logs
  for stage in ("stgan", "hourglass", "joint"):
    lines = open(os.path.join(workdir, "metrics", f"{stage}.jsonl")).read().splitlines()
    assert all(np.isfinite(v) for line in lines for k, v in json.loads(line).items() if k != "step")
  assert model_io.load_trained(config, workdir).available == {
    "stgan",
    "hourglass",
    "dictionary",
    "resnet",
    "joint",
  }

  # train.py ends with the evaluation (config.evaluate_after_training): its table is logged.
  [markdown] = [line for line in logs if "| Method |" in line]
  report = json.load(open(os.path.join(workdir, "eval", "report.json")))
  ablation = report["tables"]["ablation"]
  assert "HG" in markdown and "ST-GAN + HG + SR" in markdown
  text = json.dumps(ablation)
  for method in (
    "Res-50",
    "ST-GAN + Res-50",
    "HG",
    "ST-GAN + HG",
    "HG + SR",
    "ST-GAN + HG + SR",
    "ST-GAN + HG (joint)",
    "ST-GAN + HG + SR (joint)",
    "Mean shape",
  ):
    assert f'"{method}"' in text, method
  assert len(report["tables"]["thresholds"]["rows"]) == 12
  assert "occlusion_occluded_test" in report["tables"]
  for subset in ("test", "occluded_test"):
    overlay = Image.open(os.path.join(workdir, "eval", f"overlay_{subset}.png"))
    assert overlay.size[0] == 2 * 2 * config.data.crop_size  # crop | canonical, zoom 2
    assert os.path.exists(os.path.join(workdir, "eval", f"report_ced_{subset}.png"))


def test_a_split_outside_the_paper_tables_still_gets_the_ablation_table():
  """300-W's Tables III/IV need its common / challenge / private subsets; a validation split
  of the training folders has none of them: the ablation table alone, no error."""
  from msm_jax.eval import paper_tables, subset_metrics
  from tests import tiny_models

  config = _tiny_config()
  config.data.dataset = "300w"
  rng = np.random.default_rng(0)
  truth = tiny_models.face_dictionary(rng, size=3).astype(np.float64)
  subset = subset_metrics.SubsetPredictions("validation", truth + 1.0, truth)
  row = subset_metrics.subset_metrics(subset, "300w")
  tables = paper_tables._tables(
    config, {"ST-GAN + HG + SR": {"validation": row}}, {"validation": None}, False
  )
  assert list(tables) == ["ablation"]

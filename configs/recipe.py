"""The shipped model's training recipe for any 68-, 29- or 98-point data: what the configs of
real datasets add to the paper's settings (`base.py`) so that one `train.py` run makes a
network for faces as `predict.py` meets them (a detector's box, then the re-crop pass's tight
upright box, partly covered faces).

Every change of the run's course is a schedule inside it, placed at fixed fractions of
`epochs`: the learning rate halved five times; the box jitter wide while the network learns
the faces (a detector's box is off by up to ~15 % of the face), then narrowed to what the
re-crop pass leaves (a few degrees of roll, a few percent of scale and shift); occluders on a
growing share of the faces so that Eq. 9's scores learn what a covered landmark looks like.
"""

# The recipe's epochs are laid out for this many epochs and scaled to the config's.
LAYOUT_EPOCHS = 104
LR_HALVINGS = (36, 56, 72, 84, 94)
# field -> ((epoch, value), ...) at LAYOUT_EPOCHS; straight lines between the knots.
SCHEDULE = {
  "rotation_degrees": ((40, 30.0), (56, 12.0), (72, 8.0)),
  "scale": ((40, 0.2), (56, 0.06), (72, 0.04)),
  "translation": ((40, 0.1), (56, 0.04), (72, 0.025)),
  "natural_occluder": ((56, 0.3), (84, 0.9)),
  "random_erasing": ((56, 0.1), (72, 0.2)),
}


def _scaled(epoch: int, epochs: int) -> float:
  # Integer product first: at epochs == LAYOUT_EPOCHS the knots are exactly the layout's.
  return round(epoch * epochs / LAYOUT_EPOCHS, 1)


def apply(config, epochs: int = LAYOUT_EPOCHS):
  """The recipe on `config` (a `base.get_config()`), its schedules spread over `epochs`.

  The ST-GAN reads 128-pixel crops (Table I), so the stages are the hourglass and the
  dictionary; the paper's ST-GAN rows come from `--config.stages=all
  --config.data.crop_size=128 --config.hourglass.space_to_depth=1`.
  """
  config.stages = "hourglass,dictionary"
  # 256 x 256 crops with each 2 x 2 block of pixels stacked on the channels before the stem:
  # the heatmaps stay 64 x 64 and the hourglasses cost what 128-pixel crops cost.
  config.data.crop_size = 256
  config.hourglass.space_to_depth = 2
  # With oneDNN's kernels on an AVX512-BF16 CPU a bfloat16 step takes half a float32 one and
  # trains as well (docs/training.md, "Kernels and precision"); on accelerators it is their
  # native training precision.
  config.hourglass.compute_dtype = "bfloat16"
  config.hourglass.learning_rate = 1e-3
  config.hourglass.epochs = epochs
  config.hourglass.lr_halve_epochs = tuple(_scaled(epoch, epochs) for epoch in LR_HALVINGS)
  # Landmarks under an occluder learn a Gaussian twice as wide as the visible ones, so their
  # Eq. 9 scores fall under the thresholds K and the shape repair rebuilds them.
  config.hourglass.occluded_target_spread = 2.0
  for field, knots in SCHEDULE.items():
    config.augment[field] = knots[0][1]  # where the schedule starts
    config.augment.schedule[field] = tuple(
      (_scaled(epoch, epochs), value) for epoch, value in knots
    )
  # On real faces the hourglass's guess for a hidden landmark and the dictionary's
  # reconstruction err in different directions: their average beats either (chosen on
  # training faces under the robustness protocol's occluder; docs/robustness.md).
  config.shape.hourglass_weight = 0.6
  # The shipped pipeline: one re-crop pass (the default) and the test-time flip.
  config.inference.flip_test = True
  return config

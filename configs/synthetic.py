"""The built-in default: synthetic faces, widths that train on 2 CPU cores in minutes.

  python train.py --config configs/synthetic.py --workdir runs/synthetic

No download needed: the faces are rendered by msm_jax.data.synthetic from the seed.
"""

import ml_collections

from configs import base


def get_config():
  config = base.get_config()
  config.data.dataset = "synthetic"
  config.data.scheme = "300w"
  config.data.train_size = 4000
  config.data.validation_size = 100
  config.data.test_size = 300  # each of test (no occluders) and occluded_test
  config.data.eval_splits = ("test", "occluded_test")
  # Fields of msm_jax.data.synthetic.SyntheticConfig; the rest keep its defaults.
  config.data.synthetic = ml_collections.ConfigDict(
    {
      "image_size": 160,  # rendered canvas; the face box is cropped to 128x128
      "occlusion_prob": 0.3,  # training faces with occluders
    }
  )
  config.data.worker_count = 0  # 2 cores: the training step needs both

  config.stgan.batch_size = 16
  config.stgan.epochs = 2
  config.stgan.lr_halve_epochs = (1.5,)
  config.stgan.discriminator_width = 0.25  # Table II's 1024-kernel layers are CPU-heavy
  # Balance of the game (500 steps, same seed): with D at G's rate and hard labels D
  # saturates within ~100 steps (its losses ~0.001, L_A ~10) and faces end 4.6 px from the
  # template; a 5x slower D with one-sided label smoothing keeps L_A ~5 and reaches 4.0 px.
  config.stgan.discriminator_learning_rate = 1e-4
  config.stgan.real_label = 0.9

  config.hourglass.width = 64
  config.hourglass.stem_widths = (32, 32, 64)
  config.hourglass.batch_size = 16
  config.hourglass.epochs = 2
  config.hourglass.learning_rate = 1e-3
  config.hourglass.lr_halve_epochs = (1.5,)

  # Joint fine-tuning (stage "joint"): one epoch on the ST-GAN's detector-like crops.
  config.joint.epochs = 1
  config.joint.lr_halve_epochs = ()

  config.checkpoint.every_steps = 200
  config.log_every_steps = 25
  config.eval_every_steps = 0  # evaluate at the end of each stage only
  return config

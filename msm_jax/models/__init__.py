"""Flax Linen models: GDNN and DDNN (ST-GAN, Tables I-II), stacked hourglass (Fig. 3-4),
Res-50 baseline."""

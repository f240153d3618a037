"""Training: pure losses (Eq. 3-6), train states, jitted data-parallel update steps, checkpoints."""

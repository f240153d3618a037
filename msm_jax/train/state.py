"""Train states as plain pytrees, and the optax optimisers of Sec. IV-C.

A `ModelState` holds one network's parameters, BatchNorm statistics and optimiser state; the
hourglass trains one, the ST-GAN two (generator G and discriminator D, Algorithm 1). The
`TrainState` adds the step counter and a PRNG key (the seed's; no stage draws from it: the
networks have no dropout, and the augmentation's randomness comes from the data iterator,
whose position is checkpointed with the state; the key is part of the checkpointed tree).
Everything is a pytree of arrays, so it jits, shards and checkpoints as it is.
"""

from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class ModelState:
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict:
    """The variables dict that `module.apply` takes."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  rng: jax.Array
  models: dict  # name -> ModelState: {"hourglass": ...}, {"generator": ..., "discriminator": ...}


def halving_adam(
  learning_rate: float, steps_per_epoch: int, halve_after_epochs: Sequence[int]
) -> optax.GradientTransformation:
  """Adam whose learning rate halves after each listed epoch (Sec. IV-C: "reduced by half")."""
  boundaries = {int(round(float(epoch) * steps_per_epoch)): 0.5 for epoch in halve_after_epochs}
  schedule = optax.piecewise_constant_schedule(learning_rate, boundaries)
  return optax.adam(schedule)


def init_model_state(
  module, optimizer: optax.GradientTransformation, rng: jax.Array, example_input: jax.Array
) -> ModelState:
  """Initialise a Flax module and its optimiser state; `example_input` fixes the shapes."""
  variables = module.init(rng, example_input, train=False)
  params = variables["params"]
  return ModelState(
    params=params, batch_stats=variables.get("batch_stats", {}), opt_state=optimizer.init(params)
  )


def apply_gradients(
  model_state: ModelState, grads, optimizer: optax.GradientTransformation, new_batch_stats=None
) -> ModelState:
  updates, opt_state = optimizer.update(grads, model_state.opt_state, model_state.params)
  return ModelState(
    params=optax.apply_updates(model_state.params, updates),
    batch_stats=(model_state.batch_stats if new_batch_stats is None else new_batch_stats),
    opt_state=opt_state,
  )


def new_train_state(seed: int, models: dict) -> TrainState:
  return TrainState(
    step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(jax.random.key(seed)), models=models
  )

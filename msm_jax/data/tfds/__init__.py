"""The datasets prepared once as face crops: TensorFlow Datasets builders written as ArrayRecord,
read back by Grain through ``tfds.data_source`` (docs/tfds.md).

  crops.py     which window of the photo a face keeps, at which scale (NumPy and PIL only)
  builders.py  the ``tfds.core.GeneratorBasedBuilder`` s, one per dataset, over the readers
  reading.py   opening a prepared split, decoding a stored crop, the build command
  __main__.py  ``tfds build`` without TensorFlow: ``python -m msm_jax.data.tfds build ...``

Only ``builders.py`` imports ``tensorflow_datasets`` at import time; the others import it
where they open a dataset, so ``import msm_jax.data`` stays as light as it was.
"""

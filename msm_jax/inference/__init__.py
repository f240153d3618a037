"""Inference: Algorithm 2 as one jit-compiled function, the shipped-model format, the face
detector, photos -> landmarks, and the `jax.export` artefact.

Needs the models, the maths kernels and image decoding only: importing this package loads no
training code (no Grain, Orbax or optax): the import contract in pyproject.toml and
tests/test_inference.py check it.
"""

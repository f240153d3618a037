"""Builds ``msm_jax/kernels/_onednn_conv``: oneDNN convolutions as XLA FFI handlers.

Compiled against the headers of the build requirements (pyproject.toml): jaxlib's XLA FFI
headers and oneDNN's from ``onednn-devel-cpu-gomp``; at run time ``msm_jax/kernels/onednn.py``
loads ``libdnnl.so.3`` from ``onednn-cpu-gomp`` (requirements.txt) before the extension, so
the extension is not linked against it. The extension is optional: where the headers are
missing (platforms without the oneDNN wheels) or the compiler fails, the install goes on and
the models run XLA's convolutions.
"""

import importlib.metadata
import importlib.util
import os

from setuptools import Extension, setup


def _onednn_include() -> str | None:
  try:
    distribution = importlib.metadata.distribution("onednn-devel-cpu-gomp")
  except importlib.metadata.PackageNotFoundError:
    return None
  for file in distribution.files or ():
    if file.name == "dnnl.hpp" and file.parent.name == "dnnl":  # include/oneapi/dnnl/dnnl.hpp
      return str(distribution.locate_file(file).parent.parent.parent)
  return None


def _ffi_include() -> str | None:
  spec = importlib.util.find_spec("jaxlib")
  if spec is None or not spec.submodule_search_locations:
    return None
  include = os.path.join(spec.submodule_search_locations[0], "include")
  return include if os.path.isdir(os.path.join(include, "xla", "ffi", "api")) else None


def _extensions() -> list[Extension]:
  includes = [_onednn_include(), _ffi_include()]
  if None in includes:
    print(f"msm-jax: oneDNN convolutions not built (include dirs {includes})")
    return []
  return [
    Extension(
      "msm_jax.kernels._onednn",
      sources=["msm_jax/kernels/onednn_conv.cc", "msm_jax/kernels/onednn_batch_norm.cc"],
      depends=["msm_jax/kernels/onednn_common.h"],
      include_dirs=includes,
      language="c++",
      # The FFI headers end some switch functions without a return (-Wreturn-type noise).
      extra_compile_args=["-std=c++17", "-O2", "-Wno-return-type"],
      optional=True,
    )
  ]


setup(ext_modules=_extensions())

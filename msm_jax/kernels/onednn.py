"""oneDNN kernels on CPU through XLA FFI, each with a custom VJP: the 2-D convolution
(``onednn_conv.cc``: forward with the bias and optionally a ReLU fused, input gradient, kernel
and bias gradients) and
training-mode batch normalisation + ReLU (``onednn_batch_norm.cc``).

Why: on CPUs with AVX512-BF16 or AMX, oneDNN's convolutions run 2-4x faster than XLA's in
bfloat16 and faster in float32 too, and its batch norm takes one or two passes where XLA
takes several (``docs/cpu_notes.md``; ``benchmarks/bench_limit.py`` and
``bench_profile.py`` re-measure). The handlers are compiled by ``pip install``
(``setup.py``) against the headers of the ``onednn-devel-cpu-gomp`` wheel and run with the
``libdnnl.so.3`` of ``onednn-cpu-gomp``.

:func:`conv2d` and :func:`batch_norm_relu` are the kernels (call them where :func:`supports`
/ :func:`supports_batch_norm` hold; ``msm_jax/models/layers.py``'s "onednn" kernels do, and
keep tiny layers on XLA). :func:`conv_general_dilated` takes ``lax.conv_general_dilated``'s
arguments (so it drops into ``flax.linen.Conv(conv_general_dilated=...)``) and uses oneDNN
only where all of these hold, else it is ``lax.conv_general_dilated`` itself:

* the extension and ``libdnnl`` loaded (:func:`unavailable_reason` says why not);
* NHWC input, HWIO kernel, NHWC output (Flax's layout), no dilation, one feature group;
* input and kernel both float32 or both bfloat16, no ``preferred_element_type`` change.

Every kernel is wrapped in ``lax.platform_dependent``: lowered for CPU it is the custom call,
for any other platform XLA's ops, so one traced function serves CPU, GPU and TPU. A CPU
computation that holds these custom calls cannot go through ``jax.export`` (XLA refuses
custom calls without a stability guarantee): build the network with ``kernels="xla"`` for
that (``msm_jax/inference/export.py`` does).
"""

import ctypes
import functools
import glob
import importlib.metadata
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from msm_jax.kernels import xla as xla_kernels

_HANDLERS = {
  "msm_conv_forward": "MsmConvForward",
  "msm_conv_backward_data": "MsmConvBackwardData",
  "msm_conv_backward_weights": "MsmConvBackwardWeights",
  "msm_bn_relu_forward": "MsmBnReluForward",
  "msm_bn_relu_backward": "MsmBnReluBackward",
}
_LIBRARY = {}  # "library": the loaded extension (ctypes), for its plain C functions
# Where the onednn-cpu-gomp wheels exist (requirements.txt installs them there only).
WHEEL_PLATFORM = sys.platform == "linux" and platform.machine() == "x86_64"
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
_NHWC = lax.ConvDimensionNumbers(
  lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2)
)


def _libdnnl_candidates() -> list[str]:
  """Where ``onednn-cpu-gomp`` put ``libdnnl.so.3``: its recorded files, then ``<prefix>/lib``."""
  found = []
  try:
    distribution = importlib.metadata.distribution("onednn-cpu-gomp")
    found = [
      str(distribution.locate_file(f)) for f in distribution.files or () if f.name == "libdnnl.so.3"
    ]
  except importlib.metadata.PackageNotFoundError:
    pass
  return found + [os.path.join(sys.prefix, "lib", "libdnnl.so.3")]


def _extension_path() -> str | None:
  here = os.path.dirname(os.path.abspath(__file__))
  matches = sorted(glob.glob(os.path.join(here, "_onednn.*so")))
  return matches[0] if matches else None


@functools.cache
def _load() -> str:
  """Loads libdnnl and the extension, registers the handlers; '' on success, else why not."""
  if not WHEEL_PLATFORM:
    return f"no oneDNN wheels for {sys.platform} {platform.machine()}"
  extension = _extension_path()
  if extension is None:
    return "the extension was not built (pip install found no C++ compiler or no oneDNN headers)"
  libdnnl = next((path for path in _libdnnl_candidates() if os.path.exists(path)), None)
  if libdnnl is None:
    return "libdnnl.so.3 not found (pip install onednn-cpu-gomp==2023.2.0)"
  try:
    # The extension leaves oneDNN's symbols to the dynamic linker: load libdnnl globally first.
    ctypes.CDLL(libdnnl, mode=ctypes.RTLD_GLOBAL)
    library = ctypes.CDLL(extension)
    workspace_bytes = library.MsmBnReluWorkspaceBytes
    workspace_bytes.restype = ctypes.c_size_t
    workspace_bytes.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_float]
    _LIBRARY["library"] = library
    for target, symbol in _HANDLERS.items():
      jax.ffi.register_ffi_target(
        target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu"
      )
  except (OSError, AttributeError) as error:
    return f"loading {extension}: {error}"
  return ""


def unavailable_reason() -> str:
  """'' when the oneDNN kernels can run in this process, else the reason."""
  return _load()


def available() -> bool:
  return not _load()


def _attributes(strides, padding) -> dict:
  (top, bottom), (left, right) = padding
  return dict(
    stride_h=np.int64(strides[0]),
    stride_w=np.int64(strides[1]),
    pad_top=np.int64(top),
    pad_bottom=np.int64(bottom),
    pad_left=np.int64(left),
    pad_right=np.int64(right),
  )


def _call(target, results, operands, strides, padding):
  return jax.ffi.ffi_call(target, results, vmap_method="sequential")(
    *operands, **_attributes(strides, padding)
  )


def _forward(x, kernel, bias, strides, padding, relu):
  if not available():
    raise RuntimeError(f"oneDNN kernels unavailable: {unavailable_reason()}")
  xla = lambda x, kernel, bias: xla_kernels.convolution(x, kernel, bias, strides, padding, relu)
  result = jax.eval_shape(xla, x, kernel, bias)

  def onednn(x, kernel, bias):
    return jax.ffi.ffi_call("msm_conv_forward", result, vmap_method="sequential")(
      x, kernel, bias, **_attributes(strides, padding), relu=bool(relu)
    )

  return lax.platform_dependent(x, kernel, bias, cpu=onednn, default=xla)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def conv2d(
  x,
  kernel,
  bias,
  strides: tuple[int, int],
  padding: tuple[tuple[int, int], ...],
  relu: bool = False,
):
  """``conv(x, kernel) + bias``, then ReLU if ``relu``: NHWC x HWIO -> NHWC, ``bias [Cout]``
  in the same dtype, explicit ``((top, bottom), (left, right))`` padding. Call only where
  :func:`supports` holds. The bias and the ReLU are applied inside oneDNN's convolution; the
  bias gradient comes out of the kernel-gradient pass."""
  return _forward(x, kernel, bias, strides, padding, relu)


def _conv_fwd(x, kernel, bias, strides, padding, relu):
  y = _forward(x, kernel, bias, strides, padding, relu)
  return y, (x, kernel, bias, y if relu else None)


def _conv_bwd(strides, padding, relu, residuals, grad_y):
  x, kernel, bias, y = residuals
  grad_y = grad_y.astype(x.dtype)
  if relu:  # ReLU passes the gradient where its output is positive (jax.nn.relu at 0).
    grad_y = jnp.where(y > 0, grad_y, jnp.zeros((), grad_y.dtype))

  def onednn(x, kernel, bias, grad_y):
    grad_x = _call(
      "msm_conv_backward_data",
      jax.ShapeDtypeStruct(x.shape, x.dtype),
      (grad_y, kernel),
      strides,
      padding,
    )
    grad_kernel, grad_bias = _call(
      "msm_conv_backward_weights",
      (
        jax.ShapeDtypeStruct(kernel.shape, kernel.dtype),
        jax.ShapeDtypeStruct(bias.shape, jnp.float32),
      ),
      (x, grad_y),
      strides,
      padding,
    )
    return grad_x, grad_kernel, grad_bias.astype(bias.dtype)

  def xla(x, kernel, bias, grad_y):
    conv = lambda a, b: xla_kernels.convolution(a, b, None, strides, padding)
    grad_x, grad_kernel = jax.vjp(conv, x, kernel)[1](grad_y)
    # Summed in float32 as oneDNN does (XLA may sum bfloat16 in bfloat16).
    grad_bias = jnp.sum(grad_y.astype(jnp.float32), axis=(0, 1, 2)).astype(bias.dtype)
    return grad_x, grad_kernel, grad_bias

  return lax.platform_dependent(x, kernel, bias, grad_y, cpu=onednn, default=xla)


conv2d.defvjp(_conv_fwd, _conv_bwd)


def _explicit_padding(padding, x_shape, kernel_shape, strides):
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(x_shape[1:3], kernel_shape[:2], strides, padding))
  return tuple((int(low), int(high)) for low, high in padding)


def supports(x, kernel) -> bool:
  """Whether :func:`conv2d` can take these operands: same dtype, float32 or bfloat16, and the
  extension loaded."""
  return x.dtype == kernel.dtype and jnp.dtype(x.dtype) in _DTYPES and available()


def _supported(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, groups, preferred):
  if lhs.ndim != 4 or rhs.ndim != 4 or groups != 1 or not supports(lhs, rhs):
    return False
  if preferred is not None and jnp.dtype(preferred) != jnp.dtype(lhs.dtype):
    return False
  if any(d != 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1))):
    return False
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  return numbers == _NHWC


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  batch_group_count=1,
  precision=None,
  preferred_element_type=None,
):
  """``lax.conv_general_dilated``, through oneDNN on CPU where supported (module docstring)."""
  if batch_group_count == 1 and _supported(
    lhs,
    rhs,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    preferred_element_type,
  ):
    strides = tuple(int(s) for s in window_strides)
    bias = jnp.zeros(rhs.shape[-1], lhs.dtype)
    return conv2d(
      lhs, rhs, bias, strides, _explicit_padding(padding, lhs.shape, rhs.shape, strides)
    )
  return lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    batch_group_count=batch_group_count,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def supports_batch_norm(x, scale, shift) -> bool:
  """Whether :func:`batch_norm_relu` can take these operands: ``x`` float32 or bfloat16 with
  channels last, float32 ``scale`` and ``shift``, and the extension loaded."""
  return (
    x.ndim >= 2
    and jnp.dtype(x.dtype) in _DTYPES
    and scale.dtype == shift.dtype == jnp.float32
    and available()
  )


def _normalize_xla(x, scale, shift, epsilon):
  """XLA's training-mode BN (before the ReLU) in float32, with its batch statistics."""
  mean, var = xla_kernels.batch_statistics(x)
  return (x.astype(jnp.float32) - mean) * (lax.rsqrt(var + epsilon) * scale) + shift, mean, var


def _batch_norm_relu_xla(x, scale, shift, epsilon):
  z, mean, var = _normalize_xla(x, scale, shift, epsilon)
  return jnp.maximum(z, 0.0).astype(x.dtype), mean, var


def _workspace(x, epsilon) -> jax.ShapeDtypeStruct:
  """The ReLU mask oneDNN's forward hands to its backward, as a uint8 buffer."""
  rows = x.size // x.shape[-1]
  type_code = 1 if x.dtype == jnp.bfloat16 else 0
  size = _LIBRARY["library"].MsmBnReluWorkspaceBytes(rows, x.shape[-1], type_code, epsilon)
  return jax.ShapeDtypeStruct((max(int(size), 1),), jnp.uint8)


def _batch_norm_forward(x, scale, shift, epsilon):
  """(y, mean, var, workspace)."""
  if not available():
    raise RuntimeError(f"oneDNN kernels unavailable: {unavailable_reason()}")
  statistic = jax.ShapeDtypeStruct(scale.shape, jnp.float32)
  workspace = _workspace(x, epsilon)
  results = (jax.ShapeDtypeStruct(x.shape, x.dtype), statistic, statistic, workspace)

  def onednn(x, scale, shift):
    return jax.ffi.ffi_call("msm_bn_relu_forward", results, vmap_method="sequential")(
      x, scale, shift, epsilon=np.float32(epsilon)
    )

  def xla(x, scale, shift):
    y, mean, var = _batch_norm_relu_xla(x, scale, shift, epsilon)
    return y, mean, var, jnp.zeros(workspace.shape, workspace.dtype)

  return lax.platform_dependent(x, scale, shift, cpu=onednn, default=xla)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_relu(x, scale, shift, epsilon: float):
  """Training-mode batch normalisation over all but the last axis, then ReLU:
  ``x [..., C]`` float32 or bfloat16, ``scale``, ``shift`` float32 ``[C]`` -> ``(y [..., C]``
  in x's dtype, ``mean [C]``, biased ``var [C]``)``. Call only where
  :func:`supports_batch_norm` holds."""
  return _batch_norm_forward(x, scale, shift, epsilon)[:3]


def _batch_norm_fwd(x, scale, shift, epsilon):
  # symbolic_zeros=True: the primals come wrapped (value, perturbed).
  x, scale, shift = x.value, scale.value, shift.value
  y, mean, var, workspace = _batch_norm_forward(x, scale, shift, epsilon)
  return (y, mean, var), (x, y, mean, var, scale, shift, workspace)


def _batch_norm_bwd(epsilon, residuals, cotangents):
  x, y, mean, var, scale, shift, workspace = residuals
  grad_y, grad_mean, grad_var = cotangents
  grad_y = jnp.zeros_like(y) if isinstance(grad_y, SymbolicZero) else grad_y.astype(x.dtype)
  statistic = jax.ShapeDtypeStruct(scale.shape, jnp.float32)
  results = (jax.ShapeDtypeStruct(x.shape, x.dtype), statistic, statistic)

  def onednn(x, y, grad_y, mean, var, scale, shift, workspace):
    del y, shift
    return jax.ffi.ffi_call("msm_bn_relu_backward", results, vmap_method="sequential")(
      x, grad_y, mean, var, scale, workspace, epsilon=np.float32(epsilon)
    )

  def xla(x, y, grad_y, mean, var, scale, shift, workspace):
    del mean, var, workspace
    # ReLU passes the gradient where its output is positive (jax.nn.relu's convention at 0).
    grad_z = jnp.where(y > 0, grad_y, jnp.zeros((), x.dtype))
    normalize = lambda x, scale, shift: _normalize_xla(x, scale, shift, epsilon)[0].astype(x.dtype)
    return jax.vjp(normalize, x, scale, shift)[1](grad_z)

  operands = (x, y, grad_y, mean, var, scale, shift, workspace)
  grad_x, grad_scale, grad_shift = lax.platform_dependent(*operands, cpu=onednn, default=xla)
  # The returned statistics' own gradients; symbolic zeros (the training step's case: they
  # only feed running averages) cost nothing.
  count = x.size // x.shape[-1]
  extra = 0.0
  if not isinstance(grad_mean, SymbolicZero):
    extra = extra + grad_mean / count
  if not isinstance(grad_var, SymbolicZero):
    extra = extra + (x.astype(jnp.float32) - mean) * (2.0 * grad_var / count)
  if not isinstance(extra, float):
    grad_x = (grad_x.astype(jnp.float32) + extra).astype(x.dtype)
  return grad_x, grad_scale, grad_shift


batch_norm_relu.defvjp(_batch_norm_fwd, _batch_norm_bwd, symbolic_zeros=True)

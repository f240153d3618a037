"""Native CPU kernels behind pure-JAX fallbacks (oneDNN convolutions via XLA FFI)."""

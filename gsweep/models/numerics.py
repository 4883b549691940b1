"""Matmul precision: exact float32 ('highest', the default), TF32, or bf16 compute with float32
master weights and float32 accumulation/loss."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Numerics:
    precision: str = "highest"

    def dense(self, x, w):
        """x[..., i] @ w[i, o] as one 2-D matmul (batch dims flattened): XLA:CPU runs a dot with
        several contracting dims (the weight gradient of a 3-D einsum) on a slow generic path."""
        lead = x.shape[:-1]
        return self.mm("ni,io->no", x.reshape(-1, x.shape[-1]), w).reshape(*lead, w.shape[-1])

    def mm(self, spec: str, a, b):
        if self.precision == "bf16":
            return jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                              preferred_element_type=jnp.float32)
        prec = jax.lax.Precision.HIGHEST if self.precision == "highest" else jax.lax.Precision.DEFAULT
        return jnp.einsum(spec, a, b, precision=prec)

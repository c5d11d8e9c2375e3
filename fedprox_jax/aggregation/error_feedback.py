"""Compressed uploads with error feedback (compression.error_feedback; Stich et al. 2018,
Karimireddy et al. 2019): each client keeps what its compression left out, e_i (0 at first), and
sends C(upload + e_i) in its next upload, keeping e_i <- upload + e_i - C(upload + e_i). What a
client sent plus its residual is then what it would have sent uncompressed, summed over its rounds.

C is compress.py's compression. The residual is per-client state, shaped like the upload, kept in
the engine's client-state store (aggregation/client_state.py); a client that uploads nothing this
round (a dropped straggler) keeps its residual as it was. Turning error feedback on or off changes
what the program keeps for every client, so it is part of the program's structure (a sweep that
varies it compiles one program each); bits and topk are traced per run either way.
"""
import jax
import jax.numpy as jnp

from fedprox_jax.aggregation import base
from fedprox_jax.aggregation import compress


def init_client_state(upload_shape):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), upload_shape)


def client(upload, state, hp, key, residual):
  del state
  target = jax.tree.map(jnp.add, upload, residual)
  sent = compress.compress(target, hp, key)
  return sent, {
      'compression_error': compress.relative_error(sent, target),
      'uploaded': 1.0
  }, jax.tree.map(jnp.subtract, target, sent)


STAGE = base.Stage(name='error_feedback',
                   order=5,
                   fields={
                       **compress.FIELDS, 'compression.error_feedback': 'error_feedback'
                   },
                   active=lambda values: compress.on(values, feedback=True),
                   client=client,
                   server=compress.server,
                   init_client_state=init_client_state,
                   encode=compress.ENCODE,
                   skips_work=True)

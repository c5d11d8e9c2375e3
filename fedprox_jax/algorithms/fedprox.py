"""FedProx (Li et al., MLSys 2020): local SGD on loss + mu/2 ||y - w||^2, the weighted mean of the
clients' deltas. The proximal term is the local solver's (every algorithm has it when mu > 0);
so is the adaptive mu rule (algorithms/adaptive_mu.py), which the round loop applies to any run
that sets algorithm.adaptive_mu.
"""
from fedprox_jax.algorithms import base


def upload(result: base.ClientResult, state, client_state, hp):
  del state, hp
  return {'delta': result.delta}, client_state


def server_delta(totals: base.Totals, state, hp):
  del hp
  return base.mean(totals.sums['delta'], totals.weight), state


ALGORITHM = base.Algorithm(name='fedprox',
                           init_state=base.no_state,
                           upload=upload,
                           server_delta=server_delta)

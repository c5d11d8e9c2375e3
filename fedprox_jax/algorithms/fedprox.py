"""FedProx (Li et al., MLSys 2020): local SGD on loss + mu/2 ||y - w||^2, the weighted mean of the
clients' deltas, and the paper's adaptive mu (Section 5.3.3).

The proximal term is the default local objective's (core/client.py), so every algorithm whose
objective builds on it has it when mu > 0. Adaptive mu is FedProx's alone: this file declares
algorithm.adaptive_mu and its rule, so FedProx and FedAvg (FedProx's functions with mu = 0) read
it, and a run of any other algorithm that sets it is warned that it is not read (it is not).
Rule: raise mu by 0.1 when the training loss rises, lower it by 0.1 (never below 0) after the loss
has fallen for 5 consecutive rounds; mu's configured value is where it starts.
"""
from typing import NamedTuple

import numpy as np

from fedprox_jax.algorithms import base

STEP = 0.1
PATIENCE = 5


class MuState(NamedTuple):
  """Per run: the current mu, the last training loss (NaN before the first) and how many rounds
  in a row it has fallen."""
  mu: np.ndarray
  last_loss: np.ndarray
  falling: np.ndarray


def initial_mu(hp: dict) -> MuState:
  mu = np.asarray(hp['mu'], np.float32)
  return MuState(mu, np.full_like(mu, np.nan), np.zeros(mu.shape, np.int32))


def update_mu(state: MuState, loss: np.ndarray, enabled: np.ndarray) -> MuState:
  """The state after a round whose training loss is `loss`; runs not `enabled` keep their mu."""
  rose = loss > state.last_loss  # False against NaN: the first loss only sets the reference.
  fell = loss < state.last_loss
  falling = np.where(fell, state.falling + 1, 0)
  mu = np.where(rose, state.mu + STEP, state.mu)
  calm = falling >= PATIENCE
  mu = np.where(calm, np.maximum(mu - STEP, 0.0), mu)
  falling = np.where(calm, 0, falling)
  return MuState(
      np.where(enabled, mu, state.mu).astype(np.float32), np.asarray(loss, np.float32),
      falling.astype(np.int32))


ADAPTIVE_MU = base.RoundRule(enabled_by='adaptive_mu',
                             metric='train/loss',
                             initial=initial_mu,
                             update=update_mu,
                             hyperparameters=lambda state: {'mu': state.mu})

ALGORITHM = base.Algorithm(
    name='fedprox',
    init_state=base.no_state,
    upload=base.delta_upload,
    server_delta=base.mean_delta,
    hyperparameters=(base.Hyperparameter(
        'adaptive_mu', False, lambda v: isinstance(v, bool), 'must be True or False',
        "FedProx's rule: mu +0.1 when the training loss rises, -0.1 after 5 rounds of falling "
        'loss; algorithm.mu is its start'),),
    round_rule=ADAPTIVE_MU)

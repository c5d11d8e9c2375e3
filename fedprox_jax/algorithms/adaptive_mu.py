"""The paper's adaptive mu (Section 5.3.3): raise mu by 0.1 when the training loss rises, lower it
by 0.1 (never below 0) after the loss has fallen for 5 consecutive rounds."""
from typing import NamedTuple

import numpy as np

STEP = 0.1
PATIENCE = 5


class State(NamedTuple):
  """Per run: the current mu, the last training loss (NaN before the first) and how many rounds
  in a row it has fallen."""
  mu: np.ndarray
  last_loss: np.ndarray
  falling: np.ndarray


def initial(mu: np.ndarray) -> State:
  mu = np.asarray(mu, np.float32)
  return State(mu, np.full_like(mu, np.nan), np.zeros(mu.shape, np.int32))


def update(state: State, loss: np.ndarray, enabled: np.ndarray) -> State:
  """The state after a round whose training loss is `loss`; runs not `enabled` keep their mu."""
  rose = loss > state.last_loss  # False against NaN: the first loss only sets the reference.
  fell = loss < state.last_loss
  falling = np.where(fell, state.falling + 1, 0)
  mu = np.where(rose, state.mu + STEP, state.mu)
  calm = falling >= PATIENCE
  mu = np.where(calm, np.maximum(mu - STEP, 0.0), mu)
  falling = np.where(calm, 0, falling)
  return State(
      np.where(enabled, mu, state.mu).astype(np.float32), np.asarray(loss, np.float32),
      falling.astype(np.int32))

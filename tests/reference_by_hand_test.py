"""The sequential reference against FedAvg, FedProx and FedAvgM written out again here in
float64 NumPy for its linear model: what FedAvg and FedProx share, what sets them apart
(stragglers dropped, the proximal term), and the server's momentum."""
import numpy as np

from fedprox_jax.engine import reference as ref
from tests.reference_runs import BATCH
from tests.reference_runs import CLASSES
from tests.reference_runs import RUNS
from tests.reference_runs import init_params
from tests.reference_runs import make_cohort
from tests.reference_runs import run_rounds
from tests.reference_runs import settings
from tests.reference_runs import uneven_data


def _softmax_gradient(logits, labels):
  s = np.exp(logits - logits.max(1, keepdims=True))
  return s / s.sum(1, keepdims=True) - np.eye(CLASSES)[labels]


def _train_by_hand(params, data, client, client_key, epochs, hp):
  """One client's local SGD in float64 NumPy, from the equations: the mean cross-entropy of a
  batch (the epoch order of the shared shuffle), + mu/2 ||y - w||^2 + weight decay."""
  x, y, offsets, sizes = data
  w = [params[0].astype(np.float64), params[1].astype(np.float64)]
  kernel, bias = w[0].copy(), w[1].copy()
  for e in range(epochs):
    order = offsets[client] + ref.swap_or_not(np.asarray(ref.epoch_key(client_key, e)),
                                              sizes[client])
    for start in range(0, sizes[client], BATCH):
      rows = order[start:start + BATCH]
      s = _softmax_gradient(x[rows] @ kernel + bias, y[rows]) / len(rows)
      kernel = kernel - hp['lr'] * (x[rows].T @ s + hp['mu'] * (kernel - w[0]) + hp['wd'] * kernel)
      bias = bias - hp['lr'] * (s.sum(0) + hp['mu'] * (bias - w[1]) + hp['wd'] * bias)
  return kernel, bias


def _clients_mean_by_hand(params, cohort, data, r, hp, drop_stragglers):
  """Run r's q-weighted mean of its clients' final params. FedProx keeps a straggler's partial
  work; FedAvg drops stragglers from the round altogether."""
  finals, q = [], []
  for k, client in enumerate(cohort.clients[r]):
    if cohort.weights[r, k] == 0 or (drop_stragglers and cohort.stragglers[r, k]):
      continue
    finals.append(_train_by_hand(params, data, client, cohort.keys[r, k], cohort.epochs[r, k], hp))
    q.append(float(cohort.weights[r, k]))
  p = np.array(q) / sum(q)
  return [sum(pk * f[leaf] for pk, f in zip(p, finals)) for leaf in range(2)]


def _leaves(params, r):
  return [np.asarray(params['Dense_0'][name][r]) for name in ('kernel', 'bias')]


def _cohorts(data, stragglers: bool, rounds=3):
  """Each round: 4 clients of 2 epochs; with `stragglers`, two of them do 1 epoch."""
  epochs = [[2, 1, 2, 1], [1, 2, 2, 2]] if stragglers else [[2] * 4] * 2
  return [
      make_cohort((np.array([[0, 3, 5, 7], [1, 2, 9, 11]]) + 2 * t) % 12, epochs, data[3], seed=t)
      for t in range(rounds)
  ]


def _fedavg_or_fedprox_by_hand(data, cohorts, mu, drop_stragglers):
  """Rounds of server SGD with rate 1 (the model becomes the clients' mean) for both runs."""
  params = [_leaves(init_params(), r) for r in range(RUNS)]
  hp = dict(lr=0.1, wd=1e-3, mu=mu)
  for cohort in cohorts:
    params = [
        _clients_mean_by_hand(params[r], cohort, data, r, hp, drop_stragglers) for r in range(RUNS)
    ]
  return params


def _assert_runs_close(state, by_hand):
  for r in range(RUNS):
    for got, want in zip(_leaves(state.params, r), by_hand[r]):
      np.testing.assert_allclose(got, want, atol=2e-6)


def test_fedprox_with_mu_zero_and_no_stragglers_is_plain_fedavg():
  """The one exact equivalence of the two: with mu = 0 and nobody straggling, FedProx's rounds are
  plain local SGD averaged (the reference, against a second rendering written here)."""
  data, cfg = uneven_data(), settings(mu=0.0, server_learning_rate=1.0)
  cohorts = _cohorts(data, stragglers=False)
  by_hand = _fedavg_or_fedprox_by_hand(data, cohorts, mu=0.0, drop_stragglers=True)
  _assert_runs_close(run_rounds('fedprox', 'sgd', cfg, data, 3, cohorts), by_hand)


def test_fedavg_drops_stragglers_and_fedprox_keeps_their_work_under_its_proximal_term():
  """With stragglers, FedAvg's round (its cohort drops them: weight 0, no work) is plain local
  SGD over the others; FedProx's is the proximal SGD of everyone, partial work included."""
  data, mu = uneven_data(), 0.5
  cohorts = _cohorts(data, stragglers=True)
  dropped = [c._replace(weights=np.where(c.stragglers, 0.0, c.weights)) for c in cohorts]
  fedavg = run_rounds('fedavg', 'sgd', settings(mu=0.0, server_learning_rate=1.0), data, 3, dropped)
  _assert_runs_close(fedavg, _fedavg_or_fedprox_by_hand(data, cohorts, mu=0.0,
                                                        drop_stragglers=True))
  fedprox = run_rounds('fedprox', 'sgd', settings(mu=mu, server_learning_rate=1.0), data, 3,
                       cohorts)
  _assert_runs_close(fedprox, _fedavg_or_fedprox_by_hand(data, cohorts, mu, drop_stragglers=False))
  assert not np.allclose(_leaves(fedavg.params, 0)[0], _leaves(fedprox.params, 0)[0], atol=1e-3)


def test_server_momentum_follows_its_equations_over_the_clients_mean():
  """FedAvgM by hand: Delta_t = (the clients' mean from w_t) - w_t, m = beta m + Delta,
  w += eta m; three rounds, so the momentum carries two rounds' deltas."""
  data, beta, eta = uneven_data(), 0.9, 0.5
  cohorts = _cohorts(data, stragglers=True)
  state = run_rounds('fedprox', 'momentum',
                     settings(mu=0.2, server_momentum=beta, server_learning_rate=eta), data, 3,
                     cohorts)
  hp = dict(lr=0.1, wd=1e-3, mu=0.2)
  for r in range(RUNS):
    w = _leaves(init_params(), r)
    w, m = [a.astype(np.float64) for a in w], [np.zeros(a.shape) for a in w]
    for cohort in cohorts:
      mean = _clients_mean_by_hand(w, cohort, data, r, hp, drop_stragglers=False)
      m = [beta * mi + (ai - wi) for mi, ai, wi in zip(m, mean, w)]
      w = [wi + eta * mi for wi, mi in zip(w, m)]
    for got, want in zip(_leaves(state.params, r), w):
      np.testing.assert_allclose(got, want, atol=2e-6)

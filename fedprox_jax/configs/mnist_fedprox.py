"""FedProx on federated MNIST with the Flower baseline's settings (the project default).

    python -m fedprox_jax.run --config=configs/mnist_fedprox.py --workdir=/tmp/fedprox

1000 clients (2 labels each, power-law sizes), 10 per round, 100 rounds, mu = 1, 90% stragglers,
logistic regression. See docs/results.md for the measured accuracy and wall time.
"""
import ml_collections

from fedprox_jax import algorithms


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Root of every training-time draw: initial model, cohorts, stragglers, shuffles.
  c.num_rounds = 100  # Communication rounds.
  c.clients_per_round = 10  # K, sampled uniformly without replacement each round.
  c.eval_every = 1  # Evaluate before round 1, every eval_every rounds, and after the last round.
  c.checkpoint_every = 10  # With a workdir: save the server state every this many rounds + last.
  c.checkpoint_keep = 3  # Checkpoints kept (the latest ones).
  c.draws_version = 2  # How cohorts, local splits and synthetic data are drawn (2: Floyd's
  #                      sampler, one-sort splits). Not a choice: a run resumes only under the
  #                      draws it began with, and this release has these.

  c.data = ml_collections.ConfigDict()
  c.data.name = 'mnist'  # The task: 'mnist' or 'synthetic' (fedprox_jax/tasks/).
  c.data.pool = 'train'  # 'train': the 60k training images; 'all': all 70k (the paper's code).
  c.data.num_clients = 1000  # A multiple of 10 (the labels go round the clients).
  c.data.labels_per_client = 2  # Client u holds labels u, u+1, ... (mod 10).
  c.data.examples_per_label = 5  # Given to each client for each of its labels before the power law.
  c.data.lognormal_sigma = 2.0  # Spread of the power-law client sizes.
  c.data.train_fraction = 0.9  # Each client's local train/test split.
  c.data.seed = 0  # The partition's only source of randomness.
  c.data.normalization = 'global'  # 'global': (x/255 - 0.1307)/0.3081; 'per_pixel': the paper's.
  c.data.tfds_data_dir = ''  # TFDS data dir; '' is TFDS's default (~/tensorflow_datasets).
  c.data.manual_dir = ''  # Folder with the 4 official MNIST .gz files, for offline machines;
  #                         '' falls back to $FEDPROX_JAX_MNIST_DIR, then to TFDS's download.
  c.data.cache_dir = ''  # Where the partition is cached; '' is ~/.cache/fedprox_jax.

  c.model = ml_collections.ConfigDict()
  c.model.name = 'logistic_regression'  # or 'cnn' (the FedAvg paper's 2-layer CNN).

  c.client = ml_collections.ConfigDict()
  c.client.learning_rate = 0.03  # Local SGD step size.
  c.client.batch_size = 10  # A client's last partial batch is padded and masked.
  c.client.local_epochs = 10  # E; a straggler does uniform {1, ..., E-1} epochs.
  c.client.weight_decay = 0.001  # Coupled L2 as in torch.optim.SGD (the baseline's).

  c.algorithm = ml_collections.ConfigDict()
  c.algorithm.name = 'fedprox'  # A module of fedprox_jax/algorithms/ (docs/configuration.md).
  c.algorithm.mu = 1.0  # Proximal coefficient of the default local objective, for every
  #                       algorithm whose objective builds on it; 0 is plain local SGD.
  c.algorithm.drop_stragglers = False  # FedAvg's rule: stragglers' work is discarded.
  c.algorithm.weighting = 'examples'  # Client weights: 'examples', 'batches' (Flower's) or
  #                                     'uniform'.
  # Every algorithm's own hyperparameters (adaptive_mu, ...), at their defaults: each declared
  # once, in its algorithm's file.
  c.algorithm.update(algorithms.own_fields())

  c.server = ml_collections.ConfigDict()  # The server optimizer, fed -Delta of each round.
  c.server.optimizer = 'sgd'  # 'sgd', 'momentum' (FedAvgM), 'adam', 'yogi' or 'adagrad'.
  c.server.learning_rate = 0.0  # eta; 0 takes the optimizer's default: 1 for sgd (the model
  #                               becomes the clients' weighted mean), tuned ones otherwise.
  c.server.momentum = 0.9  # beta of 'momentum'.
  c.server.b1 = 0.9  # Momentum of 'adam', 'yogi', 'adagrad'.
  c.server.b2 = 0.99  # Second-moment decay of 'adam', 'yogi'.
  c.server.eps = 1e-3  # tau of Reddi et al.: adaptivity of 'adam', 'yogi', 'adagrad'.

  # Client-level differential privacy (DP-FedAvg; docs/privacy.md): off while clip_norm is 0.
  c.privacy = ml_collections.ConfigDict()
  c.privacy.clip_norm = 0.0  # C: each client's whole upload scaled to L2 norm <= C; 0: off.
  c.privacy.noise_multiplier = 0.0  # sigma: N(0, (sigma C)^2) on each run's sum, every round.
  c.privacy.target_epsilon = 0.0  # > 0: sigma calibrated to reach it in num_rounds (not both).
  c.privacy.delta = 0.0  # The accountant's delta; 0: N^-1.1 for N clients (below 1/N).
  c.privacy.target_quantile = 0.0  # gamma > 0: adaptive clipping to this quantile of the norms.
  c.privacy.clip_learning_rate = 0.2  # eta of adaptive clipping: C <- C exp(-eta (b - gamma)).
  c.privacy.clipped_count_stddev = 0.0  # sigma_b, the noise on the unclipped count; 0: K / 20.

  # Compressed uploads (docs/compression.md): off at bits 0 and topk 1. Bytes are counted always.
  c.compression = ml_collections.ConfigDict()
  c.compression.bits = 0  # b in {1, 2, 4, 8, 16}: stochastic quantization; 0: off (32: float32).
  c.compression.topk = 1.0  # Fraction of each tensor's coordinates kept by magnitude; 1: all.
  c.compression.error_feedback = False  # Each client adds what it left out to its next upload.

  c.stragglers = ml_collections.ConfigDict()
  c.stragglers.fraction = 0.9  # Share of stragglers among the sampled clients.
  c.stragglers.mode = 'random'  # 'random': each client w.p. fraction (Flower's); 'fixed':
  #                               exactly round(K * fraction) per round (the paper's code).

  c.eval = ml_collections.ConfigDict()
  c.eval.chunk_size = 0  # Examples per evaluation chunk (bounds memory); 0 chooses by model.
  c.eval.dissimilarity = False  # Also the paper's variance of local gradients at the global model.
  c.eval.clients = 0  # Evaluate every client's data (0), or k clients drawn afresh each time.
  c.eval.full_every = 0  # With eval.clients: every client at rounds that are multiples of this
  #                        (round 0 included); 0: never. A multiple of eval_every.

  c.compute = ml_collections.ConfigDict()
  c.compute.num_lanes = 0  # Parallel client lanes; 0 chooses from the devices.
  c.compute.cpu_devices = 2  # CPU-only machines: devices to split the CPU into; 0 = one per core.
  #                            Two lanes halve a round of 10 clients; more would mostly wait on
  #                            the round's largest client.
  c.compute.client_data = 'auto'  # 'replicated' on every device, or 'per_round': once a process,
  #                                 the cohort's rows gathered each round (engine/cohort_rows.py).
  c.compute.distributed = False  # Join a multi-process run (jax.distributed) first.
  c.compute.coordinator_address = ''  # host:port of process 0; '' = from the cluster (SLURM...).
  c.compute.num_processes = 0  # Processes in the run; 0 = from the cluster's environment.
  c.compute.process_id = -1  # This process's index; -1 = from the cluster's environment.
  c.compute.join_timeout_s = 300  # How long processes wait for each other at the start.
  c.compute.heartbeat_timeout_s = 30  # A process with no heartbeat this long stops the others.
  c.compute.compilation_cache_dir = '~/.cache/fedprox_jax/xla'  # Compiled programs; '' = off.
  return c

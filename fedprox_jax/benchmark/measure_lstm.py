"""The benchmark's measurements of the Shakespeare task, each made in its own process: its CPU
preset's rounds, the packed program against the reference, the client step's FLOP/s against a plain
jnp.dot, and the paper config's cost."""
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fedprox_jax import tasks
from fedprox_jax.benchmark import measure
from fedprox_jax.engine import devices
from fedprox_jax.experiment import settings


def lstm_step_flops(model: ml_collections.ConfigDict, batch: int, window: int,
                    num_classes: int) -> float:
  """Multiply-adds x 2 of one forward and backward step of the character LSTM, from its gate
  products ([batch, input + hidden] x [input + hidden, 4 hidden] per layer and position) and its
  output layer; the backward pass counts twice the forward (gradients of inputs and weights)."""
  forward, width = 0, model.embedding
  for _ in range(model.layers):
    forward += window * 2 * batch * (width + model.hidden) * 4 * model.hidden
    width = model.hidden
  forward += 2 * batch * model.hidden * num_classes
  return 3.0 * forward


def dot_flops_per_s(batch: int, inner: int, outer: int, repeats: int = 2000) -> float:
  """FLOP/s of a plain jnp.dot [batch, inner] x [inner, outer] on one device, chained in one
  compiled loop (as a recurrence chains its gate products) so that dispatch does not count."""
  x = jnp.ones((batch, inner), jnp.float32) * 0.01
  w = jnp.ones((inner, outer), jnp.float32) * 0.01

  @jax.jit
  def loop(x, w):
    return jax.lax.fori_loop(0, repeats, lambda i, h: jnp.dot(h, w)[:, :inner] * 0.5, x)

  jax.block_until_ready(loop(x, w))
  times = []
  for _ in range(5):
    tick = time.perf_counter()
    jax.block_until_ready(loop(x, w))
    times.append(time.perf_counter() - tick)
  return 2.0 * batch * inner * outer * repeats / float(np.median(times))


def lstm_task(cache: str, num_rounds: int, reference_rounds: int) -> dict:
  """The Shakespeare task's `cpu` preset: training rounds, a sampled evaluation, the packed
  program against the sequential reference, and the client step's FLOP/s against a plain dot."""
  from fedprox_jax.configs import shakespeare  # pylint: disable=g-import-not-at-top
  c = shakespeare.get_config('cpu')
  c.compute.compilation_cache_dir = cache
  devices.configure(settings.for_compute(c))
  tick = time.perf_counter()
  data = tasks.load(c.data)
  load_s = time.perf_counter() - tick
  tick = time.perf_counter()
  sim = settings.simulation(c, data, [settings.for_run(c)])
  setup_s = time.perf_counter() - tick
  server, _ = jax.block_until_ready(sim.run_round(sim.initial_server, 1))
  times, real, executed = [], 0, 0
  for r in range(2, num_rounds + 2):
    tick = time.perf_counter()
    server, stats = jax.block_until_ready(sim.run_round(server, r))
    times.append(time.perf_counter() - tick)
    real, executed = real + int(stats['real_steps']), executed + int(stats['executed_steps'])
  every = ml_collections.ConfigDict(c.to_dict())
  every.eval.clients = 0
  evaluations = {'sampled': [], 'every': []}
  for which, program in (('sampled', sim), ('every',
                                            settings.simulation(every, data,
                                                                [settings.for_run(c)]))):
    for r in range(4):  # The first evaluation also loads the program: not counted.
      tick = time.perf_counter()
      program.evaluate(server.params, r)
      evaluations[which].append(time.perf_counter() - tick)
  step_flops = lstm_step_flops(c.model, c.client.batch_size, data.window, data.num_classes)
  achieved = real * step_flops / sum(times) / jax.device_count()  # Per device: one lane each.
  dot = dot_flops_per_s(c.client.batch_size, c.model.hidden * 2, 4 * c.model.hidden)
  compare = measure.side_by_side(c, [settings.for_run(c)], reference_rounds, data, sim)
  return dict(model=dict(c.model),
              clients=data.num_clients,
              devices=jax.device_count(),
              lanes=sim.num_lanes,
              data_load_s=load_s,
              setup_s=setup_s,
              rounds=len(times),
              round_s_median=float(np.median(times)),
              client_steps_per_s=real / sum(times),
              real_work_share=real / executed,
              real_steps_per_round=real / len(times),
              evaluation_s_median=float(np.median(evaluations['sampled'][1:])),
              evaluation_every_client_s_median=float(np.median(evaluations['every'][1:])),
              evaluation_clients=c.eval.clients,
              step_flops=step_flops,
              step_flops_per_s_per_device=achieved,
              dot_flops_per_s=dot,
              share_of_dot=achieved / dot,
              compare=compare,
              peak_rss_mb=measure.peak_rss_mb())


def lstm_paper_cost(cache: str, steps: int) -> dict:
  """The paper's Shakespeare config: its client step (2 x 256 LSTM, batch 10) timed in a compiled
  loop on one device, its FLOPs, and its expected client steps per round from its data: K clients
  of mean ceil(n / B) batches, a straggler doing E/2 epochs on average (uniform in 1..E-1)."""
  from fedprox_jax.configs import shakespeare  # pylint: disable=g-import-not-at-top
  from fedprox_jax.tasks import models  # pylint: disable=g-import-not-at-top
  c = shakespeare.get_config()
  c.compute.compilation_cache_dir = cache
  devices.configure(settings.for_compute(c))
  data = tasks.load(c.data)
  batches = -(-data.train_sizes // c.client.batch_size)
  f, e = c.stragglers.fraction, c.client.local_epochs
  epochs = (1 - f) * e + f * (e / 2)
  apply_fn, params = models.create_model('lstm', data.num_classes, data.window,
                                         jax.random.PRNGKey(0), **models.options(c.model))
  x = jnp.zeros((c.client.batch_size, data.window), jnp.int32)
  y = jnp.zeros((c.client.batch_size,), jnp.int32)

  def loss(p):
    logits = apply_fn(p, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])

  @jax.jit
  def loop(p):
    step = lambda i, p: jax.tree.map(lambda a, g: a - 1e-3 * g, p, jax.grad(loss)(p))
    return jax.lax.fori_loop(0, steps, step, p)

  jax.block_until_ready(loop(params))
  tick = time.perf_counter()
  jax.block_until_ready(loop(params))
  step_s = (time.perf_counter() - tick) / steps
  step_flops = lstm_step_flops(c.model, c.client.batch_size, data.window, data.num_classes)
  return dict(clients=data.num_clients,
              train_windows=int(data.train_sizes.sum()),
              test_windows=int(data.local_test_sizes.sum()),
              mean_batches_per_client=float(batches.mean()),
              expected_steps_per_round=float(c.clients_per_round * batches.mean() * epochs),
              step_flops=step_flops,
              step_s=step_s,
              step_flops_per_s=step_flops / step_s,
              device=jax.devices()[0].device_kind,
              peak_rss_mb=measure.peak_rss_mb())

"""Models whose vmapping over parameters is slow (the CNN) run their parameter sets one after
another: the same metrics as each run evaluated alone, and the same values as vmap."""
import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax.core import model as model_lib
from fedprox_jax.experiment.settings import simulation
from fedprox_jax.tasks import models
from tests.conftest import settings
from tests.conftest import tiny_config
from tests.conftest import tiny_data


def test_the_cnn_declares_it_and_the_wrappers_keep_it():
  apply_fn, _ = models.create_model('cnn', 10, 784, jax.random.key(0))
  assert not apply_fn.vmaps_over_params
  assert not apply_fn.on_inputs(lambda x: x / 2).vmaps_over_params
  logistic, _ = models.create_model('logistic_regression', 10, 784, jax.random.key(0))
  assert logistic.vmaps_over_params


def test_in_sequence_equals_vmap_with_shared_arguments_and_out_axes():

  def fn(w, x, b):
    return jnp.tanh(x @ w['k']) + b

  vmapped = model_lib.ApplyFn(lambda p, x: model_lib.Outputs(x))
  in_sequence = model_lib.ApplyFn(lambda p, x: model_lib.Outputs(x), vmaps_over_params=False)
  rng = np.random.default_rng(0)
  w = {'k': jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)}
  x = jnp.asarray(rng.normal(size=(7, 5)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  for out_axes in (0, 1):
    want = model_lib.over_params(vmapped, fn, (0, None, 0), out_axes)(w, x, b)
    got = jax.jit(model_lib.over_params(in_sequence, fn, (0, None, 0), out_axes))(w, x, b)
    assert got.shape == want.shape == ((3, 7, 4) if out_axes == 0 else (7, 3, 4))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_cnn_runs_evaluated_together_equal_each_alone():
  data = tiny_data(num_clients=6, dim=784, num_classes=10)
  config = tiny_config(**{'model.name': 'cnn', 'eval.chunk_size': 16})
  seeds = (0, 1, 2)
  together = simulation(config, data, [settings(config, seed=s) for s in seeds])
  got = together.evaluate(together.initial_params)
  for run, seed in enumerate(seeds):
    alone = simulation(config, data, [settings(config, seed=seed)])
    want = alone.evaluate(alone.initial_params)
    for key in ('train/loss', 'test/accuracy', 'local_test/accuracy_p50'):
      np.testing.assert_allclose(got[key][run], want[key][0], rtol=1e-5, atol=1e-6, err_msg=key)
  assert not np.allclose(got['train/loss'][0], got['train/loss'][1])  # Each run its own model.

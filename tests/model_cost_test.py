"""The memory a model's forward pass holds: a step keeps every iteration's values of its loops for
the backward pass; an evaluation's forward pass alone reuses them from one iteration to the next."""
from fedprox_jax import tasks
from fedprox_jax.configs import mnist_fedprox
from fedprox_jax.configs import shakespeare
from fedprox_jax.engine import model_cost
from fedprox_jax.experiment import settings


def _cost(c):
  return model_cost.for_program(settings.for_program(c), settings.for_run(c),
                                *tasks.model_dims(c.data))


def test_an_evaluation_counts_a_loops_body_once_and_a_step_once_per_iteration():
  c = shakespeare.get_config('cpu')
  cost = _cost(c)
  # The LSTM's scan over the 80 characters of a window: per character, 2 layers, 4 gates of
  # `hidden` float32 values at least.
  window, per_step = 80, 2 * 4 * c.model.hidden * 4
  assert cost.example_bytes >= window * per_step
  # Alone, the forward pass holds the stacked outputs (window x hidden per layer) and one step.
  assert cost.eval_example_bytes < cost.example_bytes / 8
  assert cost.eval_example_bytes >= 2 * window * c.model.hidden * 4


def test_a_model_without_loops_costs_the_same_either_way():
  cost = _cost(mnist_fedprox.get_config())
  assert cost.eval_example_bytes == cost.example_bytes > 0

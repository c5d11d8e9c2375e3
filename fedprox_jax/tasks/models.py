"""The paper's models: for MNIST (flat float32 features [batch, 784]) and Shakespeare (windows of
character ids [batch, 80]).

Each model declares what the rest of the package needs to know of it, so that nothing else names
a model: `representation` (what it sows as its representation of an example, for algorithms that
contrast them such as MOON; None: it has none), `eval_chunk` (examples per evaluation chunk when
config.eval.chunk_size is 0), `eval_activation_floats` (float32 activations per example that an
evaluation chunk holds at once, beyond its logits, for the memory estimate) and, where vmapping it
over parameters is slow, `vmaps_over_params = False` (runs are then evaluated one after another).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax.core.model import ApplyFn
from fedprox_jax.core.model import Outputs
from fedprox_jax.errors import ConfigError
from fedprox_jax.tasks import conv
from fedprox_jax.tasks.lstm import LSTM


class LogisticRegression(nn.Module):
  """Multinomial logistic regression, 784 -> 10 (the paper's MNIST model)."""
  num_classes: int = 10
  representation = None  # Its only layer is the output.
  # Each chunk's float32 features (made from raw pixels as it is read) stay in cache: 2048 rows
  # evaluated fastest on a 2-core CPU; larger chunks were up to 3x slower.
  eval_chunk = 2048
  eval_activation_floats = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class CNN(nn.Module):
  """The FedAvg paper's CNN: 5x5 conv 32, pool, 5x5 conv 64, pool, dense 512, dense 10."""
  num_classes: int = 10
  image_shape: tuple[int, int, int] = (28, 28, 1)
  representation = 'its last hidden layer (512 units, after the ReLU)'
  eval_chunk = 512  # Its activations need small chunks.
  eval_activation_floats = 28 * 28 * 32 * 4  # The first convolution's output and its neighbours.
  # vmapped over parameters, a convolution becomes a grouped one, which XLA's CPU backend runs
  # 7x slower than the same convolutions one after another (6 runs' models on 512 examples: 4.0 s
  # against 0.54 s).
  vmaps_over_params = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape((x.shape[0], *self.image_shape))
    for features in (32, 64):
      x = nn.relu(
          nn.Conv(features, (5, 5), padding='SAME', conv_general_dilated=conv.flax_conv_same)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(512)(x.reshape(x.shape[0], -1)))
    self.sow('intermediates', 'representation', x)
    return nn.Dense(self.num_classes)(x)


MODELS = {'logistic_regression': LogisticRegression, 'cnn': CNN, 'lstm': LSTM}


def create_model(name: str, num_classes: int, input_dim: int, key: jax.Array,
                 **options) -> tuple[ApplyFn, dict]:
  """The model's apply function and initial parameters drawn with `key`; `options` (config.model's
  other fields) set the fields the model has (the LSTM's sizes)."""
  cls = MODELS[name]
  check_options(name, options)
  module = cls(num_classes=num_classes, **options)
  dummy = jnp.zeros((1, input_dim), getattr(cls, 'input_dtype', jnp.float32))
  params = module.init(key, dummy)['params']

  def outputs(p, x):
    if cls.representation is None:
      return Outputs(module.apply({'params': p}, x))
    logits, sown = module.apply({'params': p}, x, mutable=['intermediates'])
    return Outputs(logits, sown['intermediates']['representation'][0])

  return ApplyFn(outputs,
                 has_representation=cls.representation is not None,
                 vmaps_over_params=getattr(cls, 'vmaps_over_params', True)), params


def with_representation() -> list[str]:
  """The models that declare a representation."""
  return [name for name, cls in MODELS.items() if cls.representation is not None]


def check_options(name: str, options: dict) -> None:
  """A config.model field that the model does not take would be dropped: refused instead."""
  taken = sorted(set(MODELS[name].__dataclass_fields__) - {'parent', 'name', 'num_classes'})
  for field in sorted(options):
    if field not in taken:
      raise ConfigError(f'config.model.{field} is not a field of model {name!r} (its fields: '
                        f'{", ".join(taken) or "none"}): remove it, or choose the model it is for')


def options(model_config) -> dict:
  """config.model's fields but its name: the model's sizes."""
  return {k: v for k, v in model_config.items() if k != 'name'}


def on_windows(apply_fn: ApplyFn, text: np.ndarray, window: int) -> ApplyFn:
  """apply_fn on examples that are windows of `text` given by their starts [batch, 1]: each batch
  gathers its windows (the text is held once; windows would be `window` times as large)."""
  text = jnp.asarray(text)
  offsets = jnp.arange(window)
  return apply_fn.on_inputs(lambda x: text[x[:, 0, None] + offsets])


def on_raw_features(apply_fn: ApplyFn, mean: np.ndarray | float,
                    scale: np.ndarray | float) -> ApplyFn:
  """apply_fn on raw features (uint8 pixels, say), normalised as (x - mean) / scale on the way in.

  Data then stay raw on the device: uint8 pixels take a quarter of their float32 copy's memory,
  and evaluation reads a quarter of the bytes. Identity normalisations cost nothing.
  """
  mean, scale = np.asarray(mean, np.float32), np.asarray(scale, np.float32)
  if not mean.any() and np.all(scale == 1):
    return apply_fn.on_inputs(lambda x: x.astype(jnp.float32))
  return apply_fn.on_inputs(lambda x: (x.astype(jnp.float32) - mean) / scale)

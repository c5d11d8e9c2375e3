"""The paper's two MNIST models. Both take flat float32 features [batch, 784]."""
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax.tasks import conv


class LogisticRegression(nn.Module):
  """Multinomial logistic regression, 784 -> 10 (the paper's MNIST model)."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class CNN(nn.Module):
  """The FedAvg paper's CNN: 5x5 conv 32, pool, 5x5 conv 64, pool, dense 512, dense 10."""
  num_classes: int = 10
  image_shape: tuple[int, int, int] = (28, 28, 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape((x.shape[0], *self.image_shape))
    for features in (32, 64):
      x = nn.relu(
          nn.Conv(features, (5, 5), padding='SAME', conv_general_dilated=conv.flax_conv_same)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(512)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(x)


MODELS = {'logistic_regression': LogisticRegression, 'cnn': CNN}

ApplyFn = Callable[[dict, jax.Array], jax.Array]


def create_model(name: str, num_classes: int, input_dim: int,
                 key: jax.Array) -> tuple[ApplyFn, dict]:
  """The model's apply function and initial parameters drawn with `key`."""
  module = MODELS[name](num_classes=num_classes)
  params = module.init(key, jnp.zeros((1, input_dim), jnp.float32))['params']
  return (lambda p, x: module.apply({'params': p}, x)), params


def on_raw_features(apply_fn: ApplyFn, mean: np.ndarray | float,
                    scale: np.ndarray | float) -> ApplyFn:
  """apply_fn on raw features (uint8 pixels, say), normalised as (x - mean) / scale on the way in.

  Data then stay raw on the device: uint8 pixels take a quarter of their float32 copy's memory,
  and evaluation reads a quarter of the bytes. Identity normalisations cost nothing.
  """
  mean, scale = np.asarray(mean, np.float32), np.asarray(scale, np.float32)
  if not mean.any() and np.all(scale == 1):
    return lambda p, x: apply_fn(p, x.astype(jnp.float32))
  return lambda p, x: apply_fn(p, (x.astype(jnp.float32) - mean) / scale)

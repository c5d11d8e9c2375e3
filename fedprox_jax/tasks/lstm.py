"""The paper's character LSTM, with a hand-written backward pass.

The LSTM is Flax's (`nn.OptimizedLSTMCell`: gates i, f, g, o; c' = f c + i g; h' = o tanh(c')), and
tests/lstm_test.py holds its outputs and gradients to `nn.RNN` of that cell. What differs is where
the work goes. Differentiated by JAX, the backward time loop also accumulates the weights'
gradients position by position, in products whose inner dimension is the batch (10). Here that
loop computes only what is recurrent (the gates' and the hidden state's gradients), and the
weights' gradients are one product each after it, over all positions at once ([in or H, T x batch]
x [T x batch, 4H]); the inputs' projection for all positions is one product before the forward
loop. On a 2-core CPU this takes a training step (batch 10) of the 2 x 64 LSTM from 6.8 to 4.7 ms,
and of the paper's 2 x 256 from 74 to 49 ms.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def _gates(pre: jax.Array) -> tuple[jax.Array, ...]:
  i, f, g, o = jnp.split(pre, 4, -1)
  return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def _forward(w_in, w_h, b, xs, keep: bool):
  """hs [T, B, H] of inputs xs [T, B, in], and with `keep` what the backward pass needs."""
  batch, hidden = xs.shape[1], w_h.shape[0]

  def step(carry, x):
    h, c = carry
    i, f, g, o = _gates((x if keep else x @ w_in + b) + h @ w_h)
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    h_new = o * tanh_c
    # Evaluation keeps nothing for a backward pass.
    return (h_new, c_new), ((h_new, c, jnp.concatenate([i, f, g, o], -1),
                             tanh_c) if keep else h_new)

  zeros = jnp.zeros((batch, hidden), xs.dtype)
  # Training projects the inputs of all positions in one product before the loop; evaluation
  # (batches of 512, whose projections would not stay in cache) inside it, twice as fast.
  return jax.lax.scan(step, (zeros, zeros), xs @ w_in + b if keep else xs)[1]


@jax.custom_vjp
def lstm_layer(w_in: jax.Array, w_h: jax.Array, b: jax.Array, xs: jax.Array) -> jax.Array:
  """One LSTM layer over a sequence: xs [T, B, in] -> hs [T, B, H], from zero state; the gates'
  weights are fused: w_in [in, 4H], w_h [H, 4H], b [4H], in the order i, f, g, o."""
  return _forward(w_in, w_h, b, xs, keep=False)


def _lstm_forward(w_in, w_h, b, xs):
  hs, c_before, gates, tanh_c = _forward(w_in, w_h, b, xs, keep=True)
  return hs, (w_in, w_h, xs, hs, (c_before, gates, tanh_c))


def _lstm_backward(residuals, d_hs):
  w_in, w_h, xs, hs, (c_before, gates, tanh_c) = residuals
  steps, batch, hidden = hs.shape

  def step(carry, inputs):
    dh_later, dc_later = carry
    dh_out, c_prev, gate, tc = inputs
    i, f, g, o = jnp.split(gate, 4, -1)
    dh = dh_out + dh_later
    dc = dc_later + dh * o * (1 - tc * tc)
    d_pre = jnp.concatenate([
        dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g), dh * tc * o * (1 - o)
    ], -1)
    return (d_pre @ w_h.T, dc * f), d_pre

  zeros = jnp.zeros((batch, hidden), hs.dtype)
  _, d_pre = jax.lax.scan(step, (zeros, zeros), (d_hs, c_before, gates, tanh_c), reverse=True)
  h_before = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]]).reshape(steps * batch, hidden)
  d_flat = d_pre.reshape(steps * batch, 4 * hidden)
  return (xs.reshape(steps * batch, -1).T @ d_flat, h_before.T @ d_flat, d_flat.sum(0),
          d_pre @ w_in.T)


lstm_layer.defvjp(_lstm_forward, _lstm_backward)


def _recurrent_init(key, shape, dtype=jnp.float32):
  """Flax's LSTM cell's: each gate's [H, H] recurrent kernel orthogonal."""
  hidden = shape[0]
  keys = jax.random.split(key, 4)
  return jnp.concatenate([nn.initializers.orthogonal()(k, (hidden, hidden), dtype) for k in keys],
                         1)


class LSTM(nn.Module):
  """The paper's Shakespeare model: an 8-dimensional character embedding, two LSTM layers of 256
  units, and a dense layer to the characters, predicting from the last position. Initialised as
  Flax's LSTM cell is (LeCun normal input kernels, orthogonal recurrent kernels, zero biases)."""
  num_classes: int = 80
  hidden: int = 256
  layers: int = 2
  embedding: int = 8
  input_dtype = jnp.int32
  representation = "the last layer's hidden state at the last position"
  eval_chunk = 512
  eval_activation_floats = 0  # The evaluation keeps one position's state (model_cost counts it).

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.Embed(self.num_classes, self.embedding)(x.astype(jnp.int32))  # [B, T, E]
    h = jnp.swapaxes(h, 0, 1)  # Time first: the layers scan over it.
    for layer in range(self.layers):
      w_in = self.param(f'lstm_{layer}_w_in', nn.initializers.lecun_normal(),
                        (h.shape[-1], 4 * self.hidden))
      w_h = self.param(f'lstm_{layer}_w_h', _recurrent_init, (self.hidden, 4 * self.hidden))
      b = self.param(f'lstm_{layer}_b', nn.initializers.zeros, (4 * self.hidden,))
      h = lstm_layer(w_in, w_h, b, h)
    self.sow('intermediates', 'representation', h[-1])
    return nn.Dense(self.num_classes)(h[-1])

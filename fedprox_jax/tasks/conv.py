"""A stride-1 'SAME' convolution whose gradients, on CPU, are matrix products.

XLA's CPU backend runs the two backward convolutions of a conv layer (input and kernel
gradients) ten times slower inside a while loop than outside one: there they are left in a layout
its fast convolution kernels do not take. Clients train inside a while loop, so on CPU the
backward pass is computed from the same convolution written as patches @ kernel (im2col), which
is all matrix products and slices. The forward pass is XLA's convolution everywhere, and other
platforms keep XLA's own gradients.
"""
import jax
import jax.numpy as jnp

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
  """[n, h, w, c] -> [n, h, w, kh * kw * c]: each position's zero-padded neighbourhood, in the
  kernel's (row, column, channel) order."""
  h, w = x.shape[1:3]
  top, left = (kh - 1) // 2, (kw - 1) // 2  # 'SAME' puts the odd pixel of padding after.
  xp = jnp.pad(x, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)))
  return jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)], -1)


def _as_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  kh, kw, _, features = kernel.shape
  return _patches(x, kh, kw) @ kernel.reshape(-1, features)


def _as_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=_NHWC)


@jax.custom_vjp
def conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [n, h, w, c] (*) kernel [kh, kw, c, features], stride 1, 'SAME' zero padding."""
  return _as_conv(x, kernel)


def _forward(x, kernel):
  return _as_conv(x, kernel), (x, kernel)


def _backward(residuals, g):
  x, kernel = residuals
  gradients = lambda f: lambda x, kernel, g: jax.vjp(f, x, kernel)[1](g)
  return jax.lax.platform_dependent(x,
                                    kernel,
                                    g,
                                    cpu=gradients(_as_matmul),
                                    default=gradients(_as_conv))


conv_same.defvjp(_forward, _backward)


def flax_conv_same(lhs,
                   rhs,
                   window_strides,
                   padding,
                   *,
                   lhs_dilation=None,
                   rhs_dilation=None,
                   dimension_numbers=None,
                   feature_group_count=1,
                   precision=None):
  """conv_same with lax.conv_general_dilated's signature, for nn.Conv(conv_general_dilated=...);
  only the case conv_same computes is accepted."""
  del dimension_numbers, precision  # nn.Conv's defaults: NHWC inputs, HWIO kernels.
  simple = lambda v: v is None or all(d == 1 for d in v)
  if (padding != 'SAME' or not simple(window_strides) or not simple(lhs_dilation) or
      not simple(rhs_dilation) or feature_group_count != 1):
    raise ValueError('conv_same takes stride 1, no dilation, one group and SAME padding only')
  return conv_same(lhs, rhs)

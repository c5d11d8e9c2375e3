"""conv_same: XLA's convolution forward, gradients from patches @ kernel on CPU (XLA's own
elsewhere). Every test runs on the CPU, where the patches gradients are the ones taken, and on
the default platform when that is another (a GPU)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedprox_jax.tasks import conv

# The CPU backend is always there, whatever the default platform.
PLATFORMS = sorted({'cpu', jax.default_backend()})


@pytest.fixture(params=PLATFORMS)
def platform(request):
  """Runs the test with `request.param`'s first device as the default device."""
  with jax.default_device(jax.devices(request.param)[0]):
    yield request.param


def _reference(x, kernel):
  return jax.lax.conv_general_dilated(x,
                                      kernel, (1, 1),
                                      'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('kernel_shape', [(5, 5, 3, 4), (4, 2, 3, 2), (1, 1, 3, 5)])
def test_values_and_gradients_equal_xla_convolution(kernel_shape, platform):
  kx, kk, kg = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, (2, 7, 6, kernel_shape[2]))
  kernel = jax.random.normal(kk, kernel_shape)
  cotangent = jax.random.normal(kg, (2, 7, 6, kernel_shape[3]))
  assert x.devices() == {jax.devices(platform)[0]}
  for f in (conv.conv_same, jax.jit(conv.conv_same)):
    got, vjp = jax.vjp(f, x, kernel)
    want, ref_vjp = jax.vjp(_reference, x, kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(vjp(cotangent), ref_vjp(cotangent)):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_gradients_inside_a_loop_equal_outside(platform):
  """Clients train inside a while loop: the case the patches gradients exist for."""
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 2))
  kernel0 = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 2, 4))
  grad = jax.grad(lambda k: jnp.sum(jnp.tanh(conv.conv_same(x, k))))
  ref_grad = jax.grad(lambda k: jnp.sum(jnp.tanh(_reference(x, k))))
  looped = jax.jit(lambda k: jax.lax.fori_loop(0, 3, lambda i, k: k - 0.1 * grad(k), k))(kernel0)
  k = kernel0
  for _ in range(3):
    k = k - 0.1 * ref_grad(k)
  assert looped.devices() == {jax.devices(platform)[0]}
  np.testing.assert_allclose(looped, k, rtol=1e-4, atol=1e-5)


def test_flax_signature_refuses_what_it_does_not_compute():
  x, kernel = jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 2))
  assert conv.flax_conv_same(x, kernel, (1, 1), 'SAME').shape == (1, 4, 4, 2)
  with pytest.raises(ValueError, match='stride 1'):
    conv.flax_conv_same(x, kernel, (2, 2), 'SAME')
  with pytest.raises(ValueError, match='SAME'):
    conv.flax_conv_same(x, kernel, (1, 1), 'VALID')

"""The noise of client-level DP (McMahan et al., ICLR 2018; adaptive clipping: Andrew et al.,
NeurIPS 2021), shared by the clipping and noise stages and the accountant's checks.

privacy.noise_multiplier sigma is the whole round's: without adaptive clipping the sum of clipped
uploads gets N(0, (sigma C)^2) per coordinate. With it, each round also releases a noisy count of
the uploads left unclipped, with noise of standard deviation sigma_b, and the update's noise
multiplier z is chosen so that the two together cost what one Gaussian query of multiplier sigma
does (Andrew et al., Theorem 1): z^-2 + (2 sigma_b)^-2 = sigma^-2 (the count's centred terms
b_i - 1/2 have half the sensitivity of a clipped upload, in units of C). sigma = 0 adds no noise
anywhere. These work on jnp and NumPy values alike.
"""
import numpy as np

# Andrew et al.'s default for the count's noise: sigma_b = K / 20.
DEFAULT_COUNT_STDDEV_PER_CLIENT = 0.05


def count_stddev(hp: dict, cohort_size, xp=np):
  """sigma_b: privacy.clipped_count_stddev, or K / 20 when 0; 0 without noise."""
  configured = hp['clipped_count_stddev']
  chosen = xp.where(configured > 0, configured, DEFAULT_COUNT_STDDEV_PER_CLIENT * cohort_size)
  return xp.where(hp['noise_multiplier'] > 0, chosen, 0.0)


def update_noise_multiplier(hp: dict, cohort_size, xp=np):
  """z, the noise multiplier of the sum of clipped uploads: sigma with a fixed clip norm; with
  adaptive clipping (sigma^-2 - (2 sigma_b)^-2)^-1/2, NaN where that is not real (sigma >=
  2 sigma_b: the count alone would spend the whole budget)."""
  sigma = hp['noise_multiplier']
  adaptive = (hp['target_quantile'] > 0) & (sigma > 0)
  safe_sigma = xp.where(sigma > 0, sigma, 1.0)
  rest = safe_sigma**-2.0 - (2.0 * xp.maximum(count_stddev(hp, cohort_size, xp), 1e-30))**-2.0
  z = xp.where(rest > 0, xp.maximum(rest, 1e-30)**-0.5, np.nan)
  return xp.where(adaptive, z, sigma)

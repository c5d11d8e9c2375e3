"""fedprox_jax: FedProx and FedAvg under systems and statistical heterogeneity, in JAX."""

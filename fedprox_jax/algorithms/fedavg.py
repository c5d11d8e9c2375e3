"""FedAvg (McMahan et al., AISTATS 2017): FedProx's functions with no proximal term. Its config
sets mu = 0 and drops stragglers (algorithm.drop_stragglers), as the FedProx paper's FedAvg does;
both are settings of any algorithm, so FedAvg and FedProx runs share one compiled program (and
FedAvg reads FedProx's adaptive_mu, which turns it into FedProx with an adapting mu)."""
from fedprox_jax.algorithms import fedprox

ALGORITHM = fedprox.ALGORITHM._replace(name='fedavg')

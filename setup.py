"""fedprox_jax: a JAX/Flax simulator of federated learning under heterogeneity."""
import setuptools

setuptools.setup(
    name='fedprox_jax',
    version='0.2.0',
    description='FedProx and the methods it is compared with, on federated MNIST and synthetic '
    'data, vectorized over the cohort in JAX.',
    # The presets install as fedprox_jax.configs; the repository's configs/ folder holds their
    # files for path-based use and is not a package (no top-level `configs` to clash with).
    # package_dir {'': '.'} makes an editable install put the clone on sys.path (a .pth line)
    # instead of an import hook that runs after the path search: from the clone's parent folder
    # the clone itself (named fedprox_jax, no __init__.py) is then only a namespace portion, and
    # the package inside it wins, as a regular package always does over a namespace. (The clone's
    # tests/ and configs/ become importable by those names too; nothing in the package uses them.)
    package_dir={'': '.'},
    packages=setuptools.find_packages(include=['fedprox_jax', 'fedprox_jax.*']),
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.6',
        'flax>=0.10',
        'optax>=0.2.4',
        'numpy>=1.26',
        'absl-py',
        'ml-collections>=1.0',
        'matplotlib',
        'orbax-checkpoint',  # Atomic, sharding-aware checkpoints of the server state.
        'tensorboardX',  # TensorBoard event files without importing TensorFlow.
        # Client-level DP's accounting (RDP of sampling without replacement, calibration):
        # Google's accountant, pinned so that recorded epsilons stay reproducible.
        'dp-accounting==0.6.0',
        'tensorflow-datasets>=4.9.6',
        'importlib_resources',  # tensorflow-datasets imports it without declaring it.
        'tensorflow-cpu>=2.16',  # Only to prepare MNIST with TFDS, once; the cache skips it.
    ],
    extras_require={'test': ['pytest', 'pytest-xdist', 'ruff==0.17.6', 'yapf==0.43.0']},
)

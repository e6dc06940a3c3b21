"""proxyfda-cl: a continual-learning benchmark suite for concept forgetting, on Avalanche."""
from .core.version import __version__
from .core.errors import ConfigError, DataError, ProxyFDAError, WeightsError
from .config import RunConfig, make_config

__all__ = ["__version__", "ConfigError", "DataError", "ProxyFDAError", "WeightsError",
           "RunConfig", "make_config"]

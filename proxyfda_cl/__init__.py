"""proxyfda-cl: a continual-learning benchmark suite for concept forgetting, on Avalanche."""
__version__ = "0.1.0"

from .errors import ConfigError, DataError, ProxyFDAError, WeightsError  # noqa: E402
from .config import RunConfig, make_config  # noqa: E402

__all__ = ["__version__", "ConfigError", "DataError", "ProxyFDAError", "WeightsError",
           "RunConfig", "make_config"]

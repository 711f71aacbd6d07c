"""Models built by name: ``create_model("st-cnn-aff")``. Importing this package registers them all."""

from stn.models import (
    appendix,  # noqa: F401  (registers the appendix models: addition, co-localisation, 3-D)
    cub,  # noqa: F401  (registers the Table 3 models)
    mnist,  # noqa: F401  (registers the Table 1 models)
    svhn,  # noqa: F401  (registers the Table 2 models)
)
from stn.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]

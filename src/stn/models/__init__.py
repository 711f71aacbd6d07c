"""Models built by name: ``create_model("st-cnn-aff")``. Importing this package registers them all."""

from stn.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]

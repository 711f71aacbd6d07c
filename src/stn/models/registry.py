"""One registry for every model the library can build by name (the timm pattern).

Example:
    >>> import torch
    >>> from stn.models import create_model, list_models
    >>> model = create_model("st-cnn-aff", num_classes=10, in_shape=(1, 42, 42))
    >>> model(torch.rand(2, 1, 42, 42)).shape
    torch.Size([2, 10])
    >>> list_models("st-cnn-*")
    ['st-cnn-aff', 'st-cnn-proj', 'st-cnn-tps']
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable

import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers ``factory`` under ``name`` (lower-case, unique)."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        key = name.lower()
        if key in _REGISTRY:
            raise ValueError(f"model name {key!r} is registered twice")
        _REGISTRY[key] = factory
        return factory

    return decorator


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell-style ``pattern``."""
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def create_model(name: str, *, seed: int | None = None, **kwargs) -> nn.Module:
    """Build the model registered as ``name``; ``kwargs`` go to its factory.

    ``seed`` initialises the weights under ``torch.manual_seed(seed)`` in a forked random state, so that they
    depend on the seed alone and the caller's random stream is left as it was (how every experiment builds its
    models).

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    factory = _REGISTRY[key]
    if seed is None:
        model = factory(**kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory(**kwargs)
    model.stn_spec = {"name": key, "kwargs": _all_arguments(factory, kwargs)}
    return model


def model_spec(model: nn.Module) -> dict | None:
    """``{"name": ..., "kwargs": {...}}``: how :func:`create_model` built ``model`` (every factory argument,
    defaults included, so that the same call rebuilds it); ``None`` for a model built another way.

    Example:
        >>> from stn.models import create_model
        >>> from stn.models.registry import model_spec
        >>> model_spec(create_model("cnn", in_shape=(1, 28, 28)))["kwargs"]["in_shape"]
        (1, 28, 28)
    """
    return getattr(model, "stn_spec", None)


def _all_arguments(factory: ModelFactory, kwargs: dict) -> dict:
    """``kwargs`` completed with the factory's defaults (its ``**kwargs`` are merged in)."""
    signature = inspect.signature(factory)
    bound = signature.bind(**kwargs)
    bound.apply_defaults()
    arguments = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        else:
            arguments[name] = value
    return arguments

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
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from stn.models.pretrained import load_pretrained_state, pretrained_entry, split_name

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}
_RENAMED: dict[str, dict[str, str]] = {}


def register_model(name: str, *, renamed: Mapping[str, str] | None = None) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers ``factory`` under ``name`` (lower-case, unique).

    ``renamed`` maps keywords the factory had in earlier versions to their names now, so that
    :func:`upgrade_kwargs` can rebuild a model from the arguments an old checkpoint recorded.
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        key = name.lower()
        if key in _REGISTRY:
            raise ValueError(f"model name {key!r} is registered twice")
        _REGISTRY[key] = factory
        _RENAMED[key] = dict(renamed or {})
        return factory

    return decorator


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell-style ``pattern``."""
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def create_model(name: str, *, pretrained: bool | str = False, seed: int | None = None, **kwargs) -> nn.Module:
    """Build the model registered as ``name``; ``kwargs`` go to its factory.

    ``pretrained`` loads weights shipped with stn (see :mod:`stn.models.pretrained`): the tag of the data they
    were trained on (``pretrained="rts"``), or ``True`` with the tag in the name, timm's spelling
    (``create_model("st-cnn-aff.rts", pretrained=True)``), or for a model with weights for one dataset only.
    The model is then built with the arguments it was trained with; ``kwargs`` may repeat them but not change
    them. A tagged name without ``pretrained`` builds that architecture with fresh weights.

    ``seed`` initialises the weights under ``torch.manual_seed(seed)`` in a forked random state, so that they
    depend on the seed alone and the caller's random stream is left as it was (how every experiment builds its
    models).

    Raises:
        TypeError: ``pretrained`` neither a bool nor a str (``pretrained=1`` is not read as True).
        KeyError: an unknown model name, or pretrained weights that do not exist; the message lists what does.
        ValueError: ``kwargs`` that contradict the pretrained model's arguments, or a damaged weights file.

    Example:
        >>> from stn.models import create_model
        >>> model = create_model("st-cnn-aff", pretrained="rts")  # the weights shipped with stn
        >>> model.stn_spec["kwargs"]["in_shape"]
        (1, 42, 42)
    """
    if not isinstance(pretrained, bool | str):  # pretrained=1 once built fresh weights without a word
        raise TypeError(
            f"pretrained must be True, False or a tag such as 'rts' (see list_pretrained()), got {pretrained!r} "
            f"of type {type(pretrained).__name__}"
        )
    base, tag = split_name(name)
    key = base.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown model {base!r}; known models: {', '.join(list_models())}")
    if isinstance(pretrained, str):
        if tag is not None and tag != pretrained:
            raise ValueError(f"{name!r} names the tag {tag!r} but pretrained={pretrained!r}; give one tag")
        tag = pretrained
    entry = None
    if tag is not None or pretrained is True:
        entry = pretrained_entry(key, tag, hint=_hint(key))
        kwargs = _pretrained_arguments(entry, kwargs)
    factory = _REGISTRY[key]
    if seed is None:
        model = factory(**kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory(**kwargs)
    if entry is not None and pretrained:
        model.load_state_dict(load_pretrained_state(entry))
    model.stn_spec = {"name": key, "kwargs": _all_arguments(factory, kwargs)}
    return model


def upgrade_kwargs(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` recorded for model ``name`` (a checkpoint's ``model_kwargs``) with the keywords its factory has
    renamed since (see :func:`register_model`) under their names now.

    Example:
        >>> upgrade_kwargs("cub-cnn", {"backbone": "tiny", "pretrained": False})
        {'backbone': 'tiny', 'pretrained_backbone': False}
    """
    renamed = _RENAMED.get(name.lower(), {})
    return {renamed.get(k, k): v for k, v in kwargs.items()}


def _hint(key: str) -> str:
    """What a caller who meant a renamed ``pretrained`` keyword should write instead."""
    new = _RENAMED[key].get("pretrained")
    return f" (its own option once called pretrained is now {new})" if new else ""


def _pretrained_arguments(entry: Mapping[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments the pretrained model was trained with; ``kwargs`` may only repeat them."""
    trained = entry["model_kwargs"]
    changed = {k: v for k, v in kwargs.items() if k not in trained or trained[k] != v}
    if changed:
        raise ValueError(
            f"the pretrained weights {entry['model_name']}.{entry['tag']} were trained with {trained}; "
            f"they do not fit {changed}"
        )
    return dict(trained)


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

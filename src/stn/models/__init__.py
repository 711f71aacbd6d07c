"""Models built by name: ``create_model("st-cnn-aff")``. Importing this package registers them all. Weights
trained by stn ship with it: ``create_model("st-cnn-aff", pretrained="rts")`` (see :mod:`stn.models.pretrained`).

Example:
    >>> import torch
    >>> from stn.models import create_model, list_models
    >>> len(list_models()) > 20, list_models("svhn-*")
    (True, ['svhn-cnn', 'svhn-st-cnn-multi', 'svhn-st-cnn-single'])
    >>> model = create_model("st-cnn-tps", in_shape=(1, 60, 60))
    >>> model(torch.rand(2, 1, 60, 60)).shape
    torch.Size([2, 10])
"""

from stn.models import (
    appendix,  # noqa: F401  (registers the appendix models: addition, co-localisation, 3-D)
    colocalization,  # noqa: F401  (registers the co-localisation methods' models)
    cub,  # noqa: F401  (registers the Table 3 models)
    mnist,  # noqa: F401  (registers the Table 1 models)
    svhn,  # noqa: F401  (registers the Table 2 models)
)
from stn.models.pretrained import list_pretrained
from stn.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "list_pretrained", "register_model"]

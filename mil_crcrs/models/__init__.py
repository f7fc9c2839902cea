"""MIL aggregators behind one registry: ``create_model("abmil" | "mean" | "max" | "transmil")``.

Every model maps a padded batch ``features (B, N, D)``, ``mask (B, N)`` (True = real tile) and
optional ``grid (B, N, 2)`` to a :class:`MILOutput` of risk (higher = worse), logits and
per-tile attention.
"""

from mil_crcrs.models import abmil, pooling, transmil  # noqa: F401  (registers the models)
from mil_crcrs.models._base import MILModel, MILOutput, risk_from_logits
from mil_crcrs.models._registry import create_model, list_models, model_options, register_model

__all__ = [
    "MILModel",
    "MILOutput",
    "create_model",
    "list_models",
    "model_options",
    "register_model",
    "risk_from_logits",
]

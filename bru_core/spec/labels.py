"""How a campaign names its activations: the canonical spelling, except an ERU/ORU whose
radix is searched, which keeps its bare name (``eru``)."""

from __future__ import annotations

from typing import Any

from bru_core.activations import canonical_activation, parse_activation


def free_radix(activation: str) -> bool:
    """An ERU/ORU written without a radix (``eru``, not ``eru:2``)."""
    text = activation.strip().lower()
    return parse_activation(text).is_radix_family and ":" not in text


def label_of(activation: str, space: dict[str, Any]) -> str:
    """``eru`` stays ``eru`` when its radix is searched; otherwise the canonical spelling."""
    text = activation.strip().lower()
    if free_radix(text) and "radix" in space:
        return text
    return canonical_activation(text)

"""``none``: no debiasing — the backbone trained on the observed (biased) choices as they are."""

from __future__ import annotations

from typing import Any

from benchkit import hookimpl
from benchkit.interfaces import Strategy


class NoDebias(Strategy):
    name = "none"
    description = "no debiasing: the backbone alone, trained on the observed choices"


@hookimpl
def register_strategies(register: Any) -> None:
    register(NoDebias)

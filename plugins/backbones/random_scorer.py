"""``random``: the chance floor. Every music gets the same score, so the protocol's tie policy
decides the rank; under the default ``expected`` policy Recall@K is exactly K / #candidates. A floor
that cannot be argued with: any method must beat it."""

from __future__ import annotations

from typing import Any

from benchkit import hookimpl
from benchkit import interfaces as bk


class Chance(bk.Scorer):
    name = "random"
    description = "chance: scores every music the same; the tie policy makes it exactly random"


@hookimpl
def register_backbones(register: Any) -> None:
    register(Chance)

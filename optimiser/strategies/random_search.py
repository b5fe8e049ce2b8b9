"""Random search: uniformly random legal plans (each variable drawn independently). The baseline."""

from __future__ import annotations

from optimiser.strategies.base import BaseStrategy, Candidate, Problem, register_strategy

__all__ = ["RandomSearch"]


class RandomSearch(BaseStrategy):
    """Uniform sampling of the factorised variables (optionally starting with the default plan)."""

    name = "random"

    def __init__(self, problem: Problem, include_default: bool = False):
        super().__init__(problem)
        self.include_default = include_default

    def ask(self, n: int = 1) -> list[Candidate]:
        """``n`` random plans (the default plan first, once, when ``include_default``)."""
        out = []
        if self.include_default and self._number == 0 and n > 0:
            out.append(self._candidate(self.space.default_indices()))
        rows = self.space.sample(self.rng, n - len(out))
        out += [self._candidate(r) for r in rows]
        return out


register_strategy("random", RandomSearch)

"""Measurement sessions: the campaign a model record was measured in, on which device, and which one a predictor
predicts.

A store gathers campaigns measured on different days and under different revisions of the runtime (its fusions,
how its forward pass dispatches the steps). The same plan measured in two of them differs by more than the
repeats do: the VM's speed drifts from day to day and the runtime changed between them
(``benchmarks/bench_campaign_bias.py``: on ``xeon2.db`` a checkpoint trained on every campaign is off by a median
0.82x to 1.19x per campaign). Training therefore gives each session (a device, at a thread count, and a campaign)
but one per device a learned offset of its log latencies, a nuisance parameter that takes up what the session
shares; the network itself predicts the *reference* session of each device: the campaign measured with the
newest dispatch revision of the runtime, the latest of those. That is the runtime as it runs now, on the machine
as it was most recently measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["Sessions", "session_of"]


def session_of(sample: Any) -> str:
    """A model sample's session: its device (with the threads it ran at) and its campaign."""
    return f"{sample.device.device_id}|{sample.threads}|{sample.campaign}"


def _device_of(session: str) -> str:
    return session.rsplit("|", 1)[0]


@dataclass(frozen=True)
class Sessions:
    """The sessions of a training set: ``offset_index`` numbers those that get an offset (all but each device's
    reference, listed in ``references``)."""

    offset_index: dict[str, int]
    references: dict[str, str]

    @classmethod
    def of(cls, models: Sequence[Any]) -> "Sessions":
        """The sessions of ``models``; per device the reference is the session with the newest dispatch revision,
        and among those the latest measured (by its latest record)."""
        rank: dict[str, tuple[int, str]] = {}
        for s in models:
            key = session_of(s)
            mine = (int(s.dispatch_revision), str(s.timestamp))
            rank[key] = max(rank.get(key, mine), mine)
        references: dict[str, str] = {}
        for key in sorted(rank):
            dev = _device_of(key)
            if dev not in references or rank[key] > rank[references[dev]]:
                references[dev] = key
        refs = set(references.values())
        others = sorted(k for k in rank if k not in refs)
        return cls({k: i for i, k in enumerate(others)}, references)

    def __len__(self) -> int:
        return len(self.offset_index)

    def index(self, sample: Any) -> int:
        """The sample's offset index, or ``len(self)`` (no offset) for a reference session or one not in training."""
        return self.offset_index.get(session_of(sample), len(self.offset_index))

"""Measurement sessions: when and under which runtime a model record was measured, and which session a predictor
predicts.

A store gathers campaigns measured on different days and under different revisions of the runtime (its fusions,
how its forward pass dispatches the steps). The same plan measured in two of them differs by more than the
repeats do: the VM's speed drifts from day to day and the runtime changed between them
(``benchmarks/bench_campaign_bias.py``: on ``xeon2.db`` a checkpoint trained on every campaign is off by a median
0.82x to 1.19x per campaign). A *session* is the campaigns of one device, at one thread count, started on the same
day under the same dispatch revision: campaigns run back to back on one day share one, so that a campaign that
measured one kind of plan only (one primitive, say) does not get an offset of its own that would take up that
primitive's error. Training gives every session but one per device a learned offset of its log latencies, a
nuisance parameter that takes up what the session shares; the network itself predicts each device's *reference*
session: the newest dispatch revision, the latest day of it. That is the runtime as it runs now, on the machine as
it was most recently measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = ["Sessions", "campaign_of"]


def campaign_of(sample: Any) -> str:
    """A model sample's campaign on its device at its thread count."""
    return f"{sample.device.device_id}|{sample.threads}|{sample.campaign}"


def _device_of(key: str) -> str:
    return "|".join(key.split("|")[:2])


@dataclass(frozen=True)
class Sessions:
    """The sessions of a training set: ``of_campaign`` maps each campaign (:func:`campaign_of`) to its session,
    ``references`` each device (id and threads) to its reference session, and ``offset_index`` numbers the other
    sessions, those that get an offset."""

    of_campaign: Mapping[str, str]
    references: Mapping[str, str]
    offset_index: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, models: Sequence[Any]) -> "Sessions":
        """The sessions of ``models``: a campaign belongs to the session of its device, its dispatch revision and
        the day of its first record."""
        first: dict[str, str] = {}
        dispatch: dict[str, int] = {}
        for s in models:
            key = campaign_of(s)
            first[key] = min(first.get(key, str(s.timestamp)), str(s.timestamp))
            dispatch[key] = max(dispatch.get(key, 1), int(s.dispatch_revision))
        of_campaign = {k: f"{_device_of(k)}|d{dispatch[k]}|{first[k][:10]}" for k in sorted(first)}
        rank = {k: (int(k.split("|")[2][1:]), k.split("|")[3]) for k in set(of_campaign.values())}  # dispatch, day
        references: dict[str, str] = {}
        for session in sorted(rank):
            dev = _device_of(session)
            if dev not in references or rank[session] > rank[references[dev]]:
                references[dev] = session
        others = sorted(k for k in rank if k not in set(references.values()))
        return cls(of_campaign, references, {s: i for i, s in enumerate(others)})

    def __len__(self) -> int:
        return len(self.offset_index)

    def session(self, sample: Any) -> str | None:
        """The sample's session, None for a campaign training did not see."""
        return self.of_campaign.get(campaign_of(sample))

    def index(self, sample: Any) -> int:
        """The sample's offset index, or ``len(self)`` (no offset) for a reference session or one not in training."""
        return self.offset_index.get(self.session(sample) or "", len(self.offset_index))

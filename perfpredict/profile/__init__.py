"""Profiling campaigns: real measurements on this machine (the proxy device) turned into dataset records.

The campaigns write to a measurement store (:mod:`perfpredict.dataset`); one module holds each part:

* :mod:`~perfpredict.profile.campaign`: what every campaign shares: the measuring :class:`Protocol`, the
  :class:`CampaignReport` it returns, the :class:`SkipLog` of capped candidates, the device it records.
* :mod:`~perfpredict.profile.sources`: what is measured: zoo specs (families, seeded variants, resolutions) and
  a user's ONNX files (:class:`OnnxSource`).
* :mod:`~perfpredict.profile.layers`: the **layers** campaign (:func:`run_layer_campaign`). Layer configurations
  drawn from the sources (every node's op, attributes and shapes, deduplicated) are each measured *in
  isolation*: a one-node graph is built by the runtime (:func:`~perfpredict.runtime.build_executable`) for
  every applicable primitive, layout, precision (fp32, int8) and pruning ratio (pruning a layer in isolation
  keeps the ``1 - ratio`` share of its output channels with the largest filter L1 norm), and only the node's
  kernel is timed (its input already in the primitive's layout and precision, so the conversions the runtime
  inserts around a lone node are not counted). The candidates of one layer are timed round-robin in a
  shuffled order (:func:`perfpredict.measure.measure_interleaved`), so drift does not bias one primitive.
* :mod:`~perfpredict.profile.plans`: the plans a model campaign draws (:func:`sample_plans`: the default plan,
  plans biased towards the choices the layer records found fastest, all-int8, all-NHWC and pruned plans, and
  random legal plans; :func:`sample_swap_plans`).
* :mod:`~perfpredict.profile.memory`: peak memory of one inference: :class:`AllocatorProbe` (deployed weight
  bytes + the peak of the bytes torch's allocator holds during a second forward pass: exact and repeatable)
  or :class:`MemoryProbe`, a persistent worker subprocess measuring RSS (glibc serves allocations above
  64 KiB with mmap, the kernel's high-water mark is reset by writing "5" to /proc/self/clear_refs after the
  executable is built and run once, one forward pass is run, peak = deployed weight bytes + high-water mark
  rise).
* :mod:`~perfpredict.profile.models`: the **models** campaign (:func:`run_model_campaign`): whole models under
  sampled plans, timed interleaved end to end (``Executable.forward``) beside a beacon, with peak memory and
  the analytical :func:`~perfpredict.runtime.estimate_peak_memory`.
* :mod:`~perfpredict.profile.rechecks`: stored records measured again: **noise** (:func:`run_noise`: a seeded
  sample re-measured in an independent run, stored as ``noise-recheck`` records; ``Store.info()["noise"]``
  reports how often the two medians agree within 5% and 10%), **memory** (:func:`run_memory_remeasure`:
  allocator memory for stores measured by RSS, as ``memory-allocator`` records pointing at their original)
  and **steps** (:func:`run_step_times`: each forward pass timed step by step).

Slow candidates are capped, never faked: a candidate whose single call takes longer than
``Protocol.max_call_ms`` (for the C reference kernels: predicted from their measured MAC rate, before
running) is skipped, and every skip is appended to ``<store>.skips.jsonl`` with its key and reason. A
measurement whose median never reached the CI target is stored with ``stable=False`` and counted.

Every record carries the device description (``describe_host`` once per thread count per store, reused
on resume), library versions, thread count, graph/plan identity and the zoo spec (family, name, params,
input shape, seed) the graph is rebuilt from. Record keys are deterministic functions of the measured
thing (device, threads, campaign, layer configuration or graph + plan, primitive, layout, precision,
prune), computed before measuring: a campaign killed at any moment resumes where it stopped, skipping
stored keys; each (layer, threads) or (model, threads) batch is one store transaction.

On a machine shared with other work, run campaigns with ``OMP_WAIT_POLICY=PASSIVE``: with OpenMP's default
spin-then-sleep barriers, two-thread kernels on an oversubscribed CPU wait for a preempted spinning thread
and take hundreds of times longer than they should.
"""

from perfpredict.profile.campaign import (
    LAYER_CAMPAIGN, MODEL_CAMPAIGN, MODEL_PROTOCOL, CampaignReport, Protocol, SkipLog, campaign_device,
)
from perfpredict.profile.layers import (
    DEFAULT_PRUNE_RATIOS, LayerCandidate, LayerConfig, collect_layer_configs, isolate_node, layer_candidates,
    run_layer_campaign,
)
from perfpredict.profile.memory import AllocatorProbe, MemoryProbe
from perfpredict.profile.models import memory_gap, run_model_campaign
from perfpredict.profile.plans import PLAN_KINDS, FastestChoices, sample_plans, sample_swap_plans
from perfpredict.profile.rechecks import (
    allocator_memory_of, rebuild_model_record, run_memory_remeasure, run_noise, run_step_times,
)
from perfpredict.profile.sources import (
    DEFAULT_RESOLUTIONS, OnnxSource, campaign_sources, campaign_specs, onnx_sources, zoo_graph,
)

__all__ = [
    "LAYER_CAMPAIGN",
    "MODEL_CAMPAIGN",
    "PLAN_KINDS",
    "DEFAULT_PRUNE_RATIOS",
    "DEFAULT_RESOLUTIONS",
    "Protocol",
    "MODEL_PROTOCOL",
    "CampaignReport",
    "SkipLog",
    "campaign_device",
    "OnnxSource",
    "campaign_sources",
    "campaign_specs",
    "onnx_sources",
    "zoo_graph",
    "LayerConfig",
    "LayerCandidate",
    "collect_layer_configs",
    "isolate_node",
    "layer_candidates",
    "run_layer_campaign",
    "FastestChoices",
    "sample_plans",
    "sample_swap_plans",
    "MemoryProbe",
    "AllocatorProbe",
    "memory_gap",
    "run_model_campaign",
    "run_noise",
    "run_memory_remeasure",
    "run_step_times",
    "allocator_memory_of",
    "rebuild_model_record",
]

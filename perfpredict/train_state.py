"""Resumable training: the state of :func:`perfpredict.train.fit_gnn` after each epoch, in one file per seed.

``perfpredict train -o DIR`` keeps ``DIR/train_state_seed<S>.pt`` while it trains (written atomically: a temporary
file renamed over the last one) and deletes it once the checkpoint is written. Run the same command again after
a kill and training goes on from the last finished epoch, with the network, the optimiser, the learning-rate
schedule, the early-stopping bookkeeping and every random generator as they were, so it ends where an unbroken
run would have. A state written for other data, options or network (its :func:`fingerprint`) is not resumed:
training starts afresh and says why.

The file loads with ``torch.load(weights_only=True)``: random states are stored as tensors and JSON text, never as
pickled objects.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

STATE_VERSION = 1


def state_path(state_dir: str | Path, seed: int) -> Path:
    """The state file of the training run of ``seed`` under ``state_dir``."""
    return Path(state_dir) / f"train_state_seed{seed}.pt"


def fingerprint(**facts: Any) -> str:
    """What a state must have been written for to be resumed: canonical JSON of ``facts`` (options, network
    configuration, the samples' :func:`samples_digest`, feature schema)."""
    return json.dumps({"state_version": STATE_VERSION, **facts}, sort_keys=True, default=str)


def samples_digest(*groups: Any) -> str:
    """A digest of the samples a run trains and validates on, in their order, with their targets: two splits of one
    store, or one split at another ``latency_stat``, differ here even where their counts agree."""
    h = hashlib.sha1()
    for samples in groups:
        for s in samples:
            h.update(f"{s.key}|{s.model_name}|{s.threads}|{s.latency_ms!r}|"
                     f"{getattr(s, 'peak_mem_bytes', None)!r}\n".encode())
        h.update(b"--\n")
    return h.hexdigest()


def random_states(numpy_rng: np.random.Generator, torch_gen: torch.Generator) -> dict[str, Any]:
    """Every random generator training draws from: Python's, numpy's global one and ``numpy_rng``, torch's global
    one and ``torch_gen``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {"python": json.dumps(random.getstate()),
            "numpy_global": json.dumps([name, int(pos), int(has_gauss), float(gauss)]),
            "numpy_global_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "numpy_rng": json.dumps(numpy_rng.bit_generator.state),
            "torch": torch.get_rng_state(), "torch_gen": torch_gen.get_state()}


def restore_random_states(states: Mapping[str, Any], numpy_rng: np.random.Generator,
                          torch_gen: torch.Generator) -> None:
    """Set the generators :func:`random_states` read back to what it read."""
    version, internal, gauss_next = json.loads(states["python"])
    random.setstate((version, tuple(internal), gauss_next))
    name, pos, has_gauss, gauss = json.loads(states["numpy_global"])
    np.random.set_state((name, states["numpy_global_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    numpy_rng.bit_generator.state = json.loads(states["numpy_rng"])
    torch.set_rng_state(states["torch"])
    torch_gen.set_state(states["torch_gen"])


def save_state(path: Path, print_: str, state: Mapping[str, Any]) -> None:
    """Write ``state`` for the run of fingerprint ``print_`` atomically (a killed write leaves the last state)."""
    from perfpredict.gnn_predictor import write_checkpoint  # torch.save to a temporary file, renamed over path

    write_checkpoint({"fingerprint": print_, **state}, path)


def load_state(path: Path, print_: str) -> dict[str, Any] | None:
    """The state at ``path`` if it was written for fingerprint ``print_``; None (and a line on stderr saying why
    it is not resumed) when it is unreadable or belongs to another run, None silently when there is none."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        print(f"perfpredict: {path}: not a readable training state ({type(exc).__name__}); training starts afresh",
              file=sys.stderr)
        return None
    if state.get("fingerprint") != print_:
        print(f"perfpredict: {path} was written for other data, options or network; training starts afresh",
              file=sys.stderr)
        return None
    return state

"""``python -m perfpredict.profile --memory-worker``: the RSS memory worker :class:`MemoryProbe` starts (internal)."""

import sys

from perfpredict.profile.memory import memory_worker

if sys.argv[1:] == ["--memory-worker"]:
    memory_worker()
else:
    sys.exit("usage: python -m perfpredict.profile --memory-worker  (internal; use `perfpredict profile`)")

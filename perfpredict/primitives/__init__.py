"""Executable primitives. Importing this package registers the built-in implementations."""

from perfpredict.primitives.registry import (LAYOUTS, PRECISIONS, Primitive, all_primitives, candidates,
                                             default_primitive, get_primitive, register)

__all__ = ["LAYOUTS", "PRECISIONS", "Primitive", "all_primitives", "candidates", "default_primitive",
           "get_primitive", "register"]

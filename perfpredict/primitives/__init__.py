"""Executable primitives. Importing this package registers the built-in implementations."""

from perfpredict.primitives.registry import (LAYOUTS, PRECISIONS, Primitive, all_primitives, candidates,
                                             default_primitive, get_primitive, primitive_family, register)

__all__ = ["LAYOUTS", "PRECISIONS", "Primitive", "all_primitives", "candidates", "default_primitive",
           "get_primitive", "primitive_family", "register"]

# built-in conv / fully-connected implementations (importing registers them)
from perfpredict.primitives import conv as _conv  # noqa: E402,F401
from perfpredict.primitives import dnnl as _dnnl  # noqa: E402,F401
from perfpredict.primitives import gemm as _gemm  # noqa: E402,F401
from perfpredict.primitives import dnnl_gemm as _dnnl_gemm  # noqa: E402,F401  (after gemm and dnnl: it reuses both)
from perfpredict.primitives import winograd4 as _winograd4  # noqa: E402,F401  (after conv: it reuses its checks)
from perfpredict.primitives import quantized as _quantized  # noqa: E402,F401
# built-in non-conv implementations, "<op>.torch" (importing registers them)
from perfpredict.primitives import elementwise as _elementwise  # noqa: E402,F401
from perfpredict.primitives import pooling as _pooling  # noqa: E402,F401
from perfpredict.primitives import dnnl_pool as _dnnl_pool  # noqa: E402,F401  (after pooling: it reuses its pads)
from perfpredict.primitives import dnnl_binary as _dnnl_binary  # noqa: E402,F401
from perfpredict.primitives import tensor_ops as _tensor_ops  # noqa: E402,F401

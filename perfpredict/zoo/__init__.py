"""Model zoo: parametric CNN families in torch.nn, canonical published instances, a seeded variant
sampler (nn-Meter style) and static ONNX export restricted to :data:`ALLOWED_OPS`."""

from perfpredict.zoo.export import ALLOWED_OPS, export_family_variants, export_onnx, onnx_op_types
from perfpredict.zoo.registry import (
    build,
    describe,
    get_family,
    get_spec,
    list_families,
    list_models,
    list_probe_families,
    list_synthetic_families,
    sample_variants,
    spec_from_dict,
)
from perfpredict.zoo.spec import Family, ModelSpec
from perfpredict.zoo.stats import count_macs, count_params, model_stats

__all__ = [
    "ALLOWED_OPS",
    "Family",
    "ModelSpec",
    "build",
    "count_macs",
    "count_params",
    "describe",
    "export_family_variants",
    "export_onnx",
    "get_family",
    "get_spec",
    "list_families",
    "list_models",
    "list_probe_families",
    "list_synthetic_families",
    "spec_from_dict",
    "model_stats",
    "onnx_op_types",
    "sample_variants",
]

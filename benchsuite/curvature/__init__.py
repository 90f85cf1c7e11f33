"""The curvature engine: products, Kronecker factors, diagonals and statistics.

Works on a plain ``nn.Sequential`` of ``nn.Linear`` layers and activation modules
with a torch loss module (``MSELoss``, ``CrossEntropyLoss``, ``BCEWithLogitsLoss``;
reduction ``mean`` or ``sum``). Every quantity is the curvature of the scalar the
loss module returns, as in BackPACK and curvlinops. See ALGORITHMS.md.
"""

from benchsuite.curvature.blocks import dense_ggn, dense_hessian, layer_ggn_block, layer_hessian_block
from benchsuite.curvature.diagonal import diag_empirical_fisher, diag_ggn_exact, diag_ggn_mc
from benchsuite.curvature.kronecker import KroneckerFactors, input_factor, kfac, kflr, kfra
from benchsuite.curvature.losses import SUPPORTED_LOSSES, LossCurvature, loss_curvature
from benchsuite.curvature.model import ForwardCache, ParamBlock, SequentialModel, supported_modules
from benchsuite.curvature.products import (
    GGNOperator,
    flatten_vectors,
    ggn_matrix_product,
    ggn_vector_product,
    ggn_vector_product_autodiff,
    hessian_matrix_product,
    hessian_vector_product,
    unflatten_vector,
)
from benchsuite.curvature.statistics import PRESETS, STATISTICS, CurvatureProbe, ProbeContext, ProbeOptions

__all__ = [
    "GGNOperator",
    "PRESETS",
    "STATISTICS",
    "SUPPORTED_LOSSES",
    "CurvatureProbe",
    "ForwardCache",
    "KroneckerFactors",
    "LossCurvature",
    "ParamBlock",
    "ProbeContext",
    "ProbeOptions",
    "SequentialModel",
    "dense_ggn",
    "diag_empirical_fisher",
    "dense_hessian",
    "diag_ggn_exact",
    "diag_ggn_mc",
    "flatten_vectors",
    "ggn_matrix_product",
    "ggn_vector_product",
    "ggn_vector_product_autodiff",
    "hessian_matrix_product",
    "hessian_vector_product",
    "input_factor",
    "kfac",
    "kflr",
    "kfra",
    "layer_ggn_block",
    "layer_hessian_block",
    "loss_curvature",
    "supported_modules",
    "unflatten_vector",
]

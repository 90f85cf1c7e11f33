"""The curvature engine: products, Kronecker factors, diagonals and dense references.

Works on a plain ``nn.Sequential`` of ``nn.Linear`` layers and activation modules
with a torch loss module (``MSELoss``, ``CrossEntropyLoss``, ``BCEWithLogitsLoss``;
reduction ``mean`` or ``sum``). Every quantity is the curvature of the scalar the
loss module returns, as in BackPACK and curvlinops. See ALGORITHMS.md.

The engine depends only on torch (its Lanczos and Hutchinson routines in
:mod:`~benchsuite.curvature.linalg` run on the model's device): it imports nothing else from benchsuite and raises its own :class:`CurvatureError`.
Functions that can split their work take one keyword, ``max_elements``.

Modules, one job each:

* ``errors``: :class:`CurvatureError` and its subclasses;
* ``losses``: :class:`LossKind`, output Hessians ℋ_n, their square roots and samplers;
* ``modules``: :class:`Abs` and :class:`Maxout`, activations torch lacks;
* ``activations``: ``f'``/``f''`` per elementwise module type (a type table);
* ``handlers``: what each module type does in the passes (a type table);
* ``model``: :class:`SequentialModel`, the parsed network and its forward/JVP/backprop passes;
* ``chunking``: :data:`DEFAULT_MAX_ELEMENTS` and the chunk rule;
* ``columns``: backpropagation of the square-root columns of ℋ (exact or sampled);
* ``products``: GN- and Hessian-vector products;
* ``diagonal``: exact and Monte-Carlo GN diagonals, empirical Fisher diagonal;
* ``kronecker``: KFRA/KFLR/KFAC factors, π and damped inverses;
* ``blocks``: dense references by ``torch.func``;
* ``linalg``: Hutchinson traces, Lanczos eigenvalues, dense blocks from products.
"""

from benchsuite.curvature.activations import (
    ElementwiseDerivatives,
    derivatives_for,
    register_derivatives,
)
from benchsuite.curvature.blocks import (
    dense_ggn,
    dense_hessian,
    layer_ggn_block,
    layer_hessian_block,
)
from benchsuite.curvature.chunking import DEFAULT_MAX_ELEMENTS
from benchsuite.curvature.diagonal import diag_empirical_fisher, diag_ggn_exact, diag_ggn_mc
from benchsuite.curvature.errors import CurvatureError, UnsupportedLossError, UnsupportedModelError
from benchsuite.curvature.handlers import ModuleHandler, handler_for, register_handler
from benchsuite.curvature.kronecker import (
    KroneckerFactors,
    damped_inverse,
    input_factor,
    kfac,
    kflr,
    kfra,
)
from benchsuite.curvature.losses import (
    SUPPORTED_LOSSES,
    LossCurvature,
    LossKind,
    check_loss,
    loss_curvature,
    per_example_scale,
)
from benchsuite.curvature.model import (
    ForwardCache,
    ParamBlock,
    SequentialModel,
    parsed,
    supported_modules,
)
from benchsuite.curvature.modules import Abs, Maxout
from benchsuite.curvature.products import (
    GGNOperator,
    HessianOperator,
    flatten_vectors,
    ggn_matrix_product,
    ggn_vector_product,
    ggn_vector_product_autodiff,
    hessian_matrix_product,
    hessian_vector_product,
    unflatten_vector,
)
from benchsuite.curvature.taylor import (
    TaylorQuadraticForms,
    rademacher_probes,
)

__all__ = [
    "rademacher_probes",
    "DEFAULT_MAX_ELEMENTS",
    "GGNOperator",
    "HessianOperator",
    "TaylorQuadraticForms",
    "SUPPORTED_LOSSES",
    "Abs",
    "CurvatureError",
    "ElementwiseDerivatives",
    "ForwardCache",
    "KroneckerFactors",
    "LossCurvature",
    "LossKind",
    "Maxout",
    "ModuleHandler",
    "ParamBlock",
    "SequentialModel",
    "UnsupportedLossError",
    "UnsupportedModelError",
    "check_loss",
    "damped_inverse",
    "dense_ggn",
    "dense_hessian",
    "derivatives_for",
    "diag_empirical_fisher",
    "diag_ggn_exact",
    "diag_ggn_mc",
    "flatten_vectors",
    "ggn_matrix_product",
    "ggn_vector_product",
    "ggn_vector_product_autodiff",
    "handler_for",
    "hessian_matrix_product",
    "hessian_vector_product",
    "input_factor",
    "kfac",
    "kflr",
    "kfra",
    "layer_ggn_block",
    "layer_hessian_block",
    "loss_curvature",
    "per_example_scale",
    "parsed",
    "register_derivatives",
    "register_handler",
    "supported_modules",
    "unflatten_vector",
]

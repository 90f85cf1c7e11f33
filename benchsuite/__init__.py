"""benchsuite: first- vs second-order optimizers on ReLU-family networks.

Public entry points: the registries (:data:`TASKS`, :data:`ACTIVATIONS`,
:data:`OPTIMIZERS`), :class:`RunSpec` and :func:`run`, the results store and the
report builders. See the README for a tour.
"""

from __future__ import annotations

__version__ = "0.1.0"

"""Analyses of trained or initial networks outside the training loop.

* :mod:`benchsuite.analysis.directions`: filter-normalised random directions (Li et al. 2018).
* :mod:`benchsuite.analysis.sources`: a network's weights from initialisation, a checkpoint or a finished run.
* :mod:`benchsuite.analysis.surface`: 2-D loss-surface slices within one layer and across two, and
  the check of Botev et al. (2017)'s claim that a piecewise-linear network's within-layer
  Hessian is PSD (no differentiable local maxima).
* :mod:`benchsuite.analysis.figures`: their contour and 3-D plots.

Submodules are imported on use (matplotlib and the runner are heavy).
"""

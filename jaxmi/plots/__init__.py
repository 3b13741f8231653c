"""Publication figures of the NT-vs-AT mutual-information experiments, one module per finding.

* :mod:`~jaxmi.plots.style` — colours, labels, atomic :func:`save_figure`, summary accessors;
* :mod:`~jaxmi.plots.finding1` — clean vs adversarial trend agreement;
* :mod:`~jaxmi.plots.finding2` — information planes, training curves, final information,
  MI trajectories (:func:`plot_all`);
* :mod:`~jaxmi.plots.finding3` — accuracy and MI under distortions, adversarial confusion,
  attribution maps, image grids;
* :mod:`~jaxmi.plots.finding4` — estimates against the geometry of a layer's output;
* :mod:`~jaxmi.plots.verdicts` — every verdict's effect with its interval (forest plot).

Every function writes PNG files (dpi 150) with :class:`matplotlib.figure.Figure` (Agg, no
pyplot state) through :func:`save_figure` and returns the paths it wrote. The MI figures
read a summary laid out as in :mod:`jaxmi.history` and validate it first (``ValueError``
naming the offending entry); missing values (``None``/NaN) are skipped point by point.
"""

from jaxmi.plots.finding1 import plot_trend_agreement
from jaxmi.plots.finding2 import (plot_all, plot_final_information, plot_information_planes, plot_mi_trajectories,
                                  plot_training_curves)
from jaxmi.plots.finding3 import (plot_attribution_maps, plot_confusion, plot_distortion_accuracy,
                                  plot_distortion_information, plot_image_grid)
from jaxmi.plots.finding4 import plot_estimator_geometry
from jaxmi.plots.verdicts import plot_effects, plot_verdicts
from jaxmi.plots.style import DPI, REGIME_COLORS, REGIME_LABELS, mi_values, save_figure

__all__ = ["DPI", "REGIME_COLORS", "REGIME_LABELS", "save_figure", "mi_values", "plot_information_planes",
           "plot_training_curves", "plot_final_information", "plot_mi_trajectories", "plot_all",
           "plot_trend_agreement", "plot_distortion_accuracy", "plot_distortion_information", "plot_confusion",
           "plot_attribution_maps", "plot_image_grid", "plot_estimator_geometry", "plot_verdicts", "plot_effects"]

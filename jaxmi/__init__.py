"""jaxmi: mutual information between CNN layers, inputs and labels for normally and adversarially
trained networks, in JAX/Flax.

The public API, one concern per module:

* :mod:`jaxmi.data` — datasets (bundled MNIST, IDX, CIFAR batches, image folders, TFDS), augmentation;
* :mod:`jaxmi.models` — MLP, LeNet, WideResNet-10-1 with named probe points;
* :mod:`jaxmi.attacks` — FGSM and L∞ PGD;
* :mod:`jaxmi.training` — NT and PGD-AT epochs, evaluation;
* :mod:`jaxmi.estimators` — KDE upper/lower bounds, binning and matrix-based Rényi entropy, in bits;
* :mod:`jaxmi.distortions`, :mod:`jaxmi.attribution` — saturation, patch shuffling; saliency, SmoothGrad, IG;
* :mod:`jaxmi.parallel`, :mod:`jaxmi.checkpoint` — the data mesh; checkpoints and trained models;
* :mod:`jaxmi.experiment`, :mod:`jaxmi.findings` — the paper's experiments;
* :mod:`jaxmi.results`, :mod:`jaxmi.plots` — run directories, summaries, figures.
"""

from jaxmi.attacks import PGDConfig, fgsm, pgd
from jaxmi.data import ArrayDataset, DataError, load_dataset
from jaxmi.estimators import (available_methods, estimate_all, estimate_mi, estimate_probes, measure_probes,
                              register_estimator)
from jaxmi.models import apply_model, create_model, init_variables, probe_widths
from jaxmi.training import (OptimConfig, TrainState, create_train_state, make_evaluator, make_optimizer,
                            make_train_epoch)

__version__ = "0.1.0"

__all__ = ["PGDConfig", "fgsm", "pgd", "ArrayDataset", "DataError", "load_dataset", "estimate_all", "estimate_mi",
           "estimate_probes", "measure_probes", "available_methods", "register_estimator", "apply_model",
           "create_model", "init_variables", "probe_widths", "OptimConfig", "TrainState", "create_train_state",
           "make_evaluator", "make_optimizer", "make_train_epoch"]

"""jaxmi: mutual information between CNN layers, inputs and labels for normally and adversarially
trained networks, in JAX/Flax.

The data flows one way, and so do the modules:

* :mod:`jaxmi.config` — the run configuration in sections, presets, validation;
* :mod:`jaxmi.backend` — every platform choice (conv implementation, loops, memory, blocks);
* :mod:`jaxmi.data` — datasets (bundled MNIST, IDX, CIFAR batches, image folders, TFDS), augmentation;
* :mod:`jaxmi.ops`, :mod:`jaxmi.models` — primitives; MLP, LeNet, WideResNet-10-1 with named probes;
* :mod:`jaxmi.probes` — probes from any Flax model, the adapter and ``package.module:factory`` specs
  that put your own model into the pipeline;
* :mod:`jaxmi.attacks` — FGSM, PGD (L∞/L2, targeted), APGD/APGD-T, AutoAttack-style robust accuracy;
* :mod:`jaxmi.training`, :mod:`jaxmi.evaluation` — NT and PGD-AT epochs over stacked seeds; the
  batched forward/attack path;
* :mod:`jaxmi.estimators` — KDE upper/lower bounds, binning and matrix-based Rényi MI, in bits;
* :mod:`jaxmi.history`, :mod:`jaxmi.run` — the typed run record; train-and-measure runs;
* :mod:`jaxmi.stats`, :mod:`jaxmi.geometry` — correlations; the geometry of a layer's output;
* :mod:`jaxmi.distortions`, :mod:`jaxmi.attribution` — saturation, patch shuffling; saliency, SmoothGrad, IG;
* :mod:`jaxmi.parallel`, :mod:`jaxmi.checkpoint`, :mod:`jaxmi.results`, :mod:`jaxmi.progress` — meshes,
  checkpoints, run directories, progress bars; :mod:`jaxmi.timelimit` — runs that stop within a wall-clock limit;
* :mod:`jaxmi.plots`, :mod:`jaxmi.findings`, :mod:`jaxmi.cli` — figures, the paper's four findings,
  their command line.
"""

from jaxmi.attacks import PGDConfig, apgd, fgsm, pgd, robust_accuracy, robustness_curve
from jaxmi.config import Config, make_config
from jaxmi.data import ArrayDataset, DataError, load_dataset
from jaxmi.estimators import available_methods, estimate, estimate_mi, register_estimator
from jaxmi.evaluation import make_evaluator
from jaxmi.models import apply_model, create_model, init_variables, probe_widths
from jaxmi.probes import ProbedModel, check_model
from jaxmi.probes import capture as capture_probes
from jaxmi.run import load_trained, train_and_measure
from jaxmi.training import TrainState, create_train_state, create_train_states, make_optimizer, make_train_epoch

__version__ = "0.1.0"

__all__ = ["PGDConfig", "fgsm", "pgd", "apgd", "robust_accuracy", "robustness_curve",
           "Config", "make_config", "ArrayDataset", "DataError", "load_dataset",
           "available_methods", "estimate", "estimate_mi", "register_estimator", "make_evaluator", "apply_model",
           "create_model", "init_variables", "probe_widths", "load_trained", "train_and_measure", "TrainState",
           "create_train_state", "create_train_states", "make_optimizer", "make_train_epoch", "ProbedModel",
           "check_model", "capture_probes"]

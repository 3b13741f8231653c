"""The configuration of an NT-vs-AT run: one frozen record in sections, validated once.

A :class:`Config` has six sections and two run-level fields::

    Config(data=DataConfig(...),      # dataset, where it is, how much of it
           model=ModelConfig(...),    # architecture and compute dtype
           optim=OptimConfig(...),    # epochs, batch, SGD schedule
           attack=AttackConfig(...),  # PGD radius, step, iterations (None: the paper's per dataset)
           mi=MIConfig(...),          # MI draw size, estimators, σ², bin size, bootstrap
           exec=ExecConfig(...),      # devices, loop strategies, evaluation batch (not the run's identity)
           seed=0, seeds=1)

Every field name is unique across sections, so a config also has a flat form
(:meth:`Config.flat`, :meth:`Config.from_dict`), used by the command line (one flag per
field, ``--learning-rate`` also as ``--lr``), presets, ``summary.json`` and run directories;
a field has that one name everywhere.

This module is a leaf: it imports nothing from jaxmi and queries no device. Building a
:class:`Config` checks ranges and vocabularies only; everything that needs the platform, the
data or the model ("auto" loops, the mesh, a model factory, the draws) is decided once by
:func:`jaxmi.plan.resolve`.

:meth:`Config.identity` is what makes two runs the same run: every field except the
``exec`` section. A run therefore resumes on another device count, loop strategy or
evaluation batch size. Every field carries its help text (``metadata["help"]``), which the
command line shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


__all__ = ["setting", "check_minimums", "DataConfig", "ModelConfig", "OptimConfig", "AttackConfig", "MIConfig", "ExecConfig",
           "Config", "PRESETS", "DEFAULT_ATTACKS", "SECTIONS", "make_config", "flat_fields",
           "normalize_identity", "MODEL_NAMES", "PRECISIONS", "ESTIMATORS", "OPTIONAL_ESTIMATORS", "DEFAULT_NOISE_VARS", "DEFAULT_BIN_SIZES",
           "LOOPS", "SEED_LOOPS", "KDE_PRECISIONS", "SPEC_FORM", "is_model_spec"]

# The vocabularies the fields take. The modules that implement them check at import that they
# agree (jaxmi.models: MODEL_NAMES, PRECISIONS; jaxmi.estimators: ESTIMATORS; jaxmi.backend:
# LOOPS, SEED_LOOPS, KDE_PRECISIONS), so that this module needs none of them.
MODEL_NAMES: tuple[str, ...] = ("lenet", "mlp", "wrn")
PRECISIONS: tuple[str, ...] = ("bfloat16", "float32")
ESTIMATORS: tuple[str, ...] = ("kde_upper", "kde_lower", "binning")
#: Estimators a run also accepts but does not use by default (``knn``: I(T;Y) only).
OPTIONAL_ESTIMATORS: tuple[str, ...] = ("knn",)
#: The σ² grid of a sweep: 13 values, a factor 4 apart, around the paper's 0.1.
DEFAULT_NOISE_VARS: tuple[float, ...] = tuple(0.1 * 4.0 ** k for k in range(-5, 8))
#: The bin-width grid of a sweep: 13 values, a factor √10 apart, around the paper's 0.5.
DEFAULT_BIN_SIZES: tuple[float, ...] = tuple(0.5 * 10.0 ** (k / 2) for k in range(-6, 7))
LOOPS: tuple[str, ...] = ("auto", "scan", "unrolled")
SEED_LOOPS: tuple[str, ...] = ("auto", "vmap", "map")
KDE_PRECISIONS: tuple[str, ...] = ("auto", "highest", "high", "default")
SPEC_FORM = ("'package.module:factory', where factory(num_classes) returns a jaxmi model, a "
             "jaxmi.probes.ProbedModel, or a pair (flax_module, probe_names)")


def is_model_spec(name: Any) -> bool:
    """Whether a configured model name is a factory spec (``"package.module:factory"``) rather
    than a built-in name."""
    return isinstance(name, str) and ":" in name


def _check_spec_form(spec: str) -> None:
    module, _, factory = spec.partition(":")
    if not module.strip() or not factory.strip():
        raise ValueError(f"model {spec!r} is not a model spec; give your own model as {SPEC_FORM}.")


def setting(default: Any, help: str, *, minimum: int | None = None, **cli: Any) -> Any:  # noqa: A002
    """A dataclass field with its help text.

    Args:
      default: the default value.
      help: what the field means (shown by the command line).
      minimum: the field is an integer ≥ this (checked by :func:`check_minimums`).
      **cli: command-line details for :mod:`jaxmi.cli` (``flag``, ``nargs``, ``type``,
        ``choices``, ``action``, ``const``, ``metavar``).
    """
    return dataclasses.field(default=default, metadata={"help": help, "minimum": minimum, **cli})


def check_minimums(obj: Any) -> None:
    """Raises ValueError for a field of the dataclass ``obj`` below its ``minimum``."""
    for f in dataclasses.fields(obj):
        lo = f.metadata.get("minimum")
        value = getattr(obj, f.name)
        if lo is not None and (isinstance(value, bool) or int(value) != value or value < lo):
            raise ValueError(f"{f.name} must be ≥ {lo}; got {value}.")


def _positive_int(name: str, value: Any, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        kind = "non-negative" if minimum == 0 else "positive"
        raise ValueError(f"{name} must be a {kind} integer; got {value}.")


# The paper's L∞ PGD settings per dataset: (ε, step size, steps).
DEFAULT_ATTACKS: dict[str, tuple[float, float, int]] = {
    "mnist": (45 / 255, 8 / 255, 7),
    "fashion_mnist": (45 / 255, 8 / 255, 7),
    "cifar10": (8 / 255, 2 / 255, 7),
    "stl10": (4 / 255, 2 / 255, 7),
}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data a run trains and measures on."""

    dataset: str = setting("mnist", "dataset name (jaxmi.data.DATASETS) or 'tfds:<name>'")
    data_dir: str | None = setting(None, "local dataset directory (IDX, CIFAR batches, image folders, TFDS dir)")
    train_examples: int | None = setting(None, "use only the first n training images (None: all)")
    eval_samples: int | None = setting(None, "test images for accuracy and loss (None: the whole test split)")

    def __post_init__(self):
        if self.train_examples is not None:
            if int(self.train_examples) != self.train_examples or self.train_examples < 1:
                raise ValueError(f"train_examples must be ≥ 1; got {self.train_examples}.")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network."""

    model: str = setting("lenet", f"model: one of {sorted(MODEL_NAMES)}, or your own Flax model as "
                                  "'package.module:factory' (factory(num_classes) returns the model or "
                                  "(flax_module, probe_names); docs/library.md)")
    precision: str = setting("float32", "layer compute dtype (bfloat16 = mixed precision for GPUs/TPUs)",
                             choices=sorted(PRECISIONS))

    def __post_init__(self):
        if self.model not in MODEL_NAMES and not is_model_spec(self.model):
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODEL_NAMES)}, or give your own "
                             f"as {SPEC_FORM}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {sorted(PRECISIONS)}.")
        if self.model not in MODEL_NAMES:
            _check_spec_form(self.model)  # importing and calling the factory is jaxmi.plan's
        if self.model not in MODEL_NAMES and self.precision != "float32":
            raise ValueError(f"precision {self.precision!r} applies to the built-in models {sorted(MODEL_NAMES)}; "
                             f"the model {self.model!r} computes in the dtype its factory sets (use precision "
                             "float32).")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """SGD with momentum and a step schedule stepped per epoch (the paper's values by default)."""

    epochs: int = setting(200, "training epochs (the paper: 200)")
    batch_size: int = setting(128, "SGD minibatch size")
    learning_rate: float = setting(0.1, "initial learning rate", flag="lr")
    momentum: float = setting(0.9, "SGD momentum")
    milestones: tuple[int, ...] = setting((20, 60), "epochs at which the rate is multiplied by decay", nargs="+",
                                          type=int)
    decay: float = setting(0.5, "learning-rate factor at each milestone")
    weight_decay: float = setting(0.0, "L2 weight decay (0: none, as in the paper)")

    def __post_init__(self):
        _positive_int("epochs", self.epochs, minimum=0)
        _positive_int("batch_size", self.batch_size)
        if not 0 < self.learning_rate < float("inf"):
            raise ValueError(f"learning_rate must be > 0 and finite; got {self.learning_rate}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum}.")
        if isinstance(self.decay, bool) or not 0 < self.decay < float("inf"):
            raise ValueError(f"decay must be a finite factor > 0 (the learning rate is multiplied by it at each "
                             f"milestone; 0.5 halves it); got {self.decay}.")
        if isinstance(self.weight_decay, bool) or not 0 <= self.weight_decay < float("inf"):
            raise ValueError(f"weight_decay must be a finite number ≥ 0 (0: none); got {self.weight_decay}.")
        for m in self.milestones:
            _positive_int("each milestone (an epoch)", m, minimum=0)
        milestones = tuple(int(m) for m in self.milestones)
        if len(set(milestones)) != len(milestones):
            raise ValueError(f"milestones must be distinct epochs; got {list(milestones)}. Give each epoch once "
                             f"(a repeated one would decay the rate once, not twice).")
        object.__setattr__(self, "milestones", milestones)


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """The L∞ PGD attack of training (with random start) and evaluation (from the clean image)."""

    eps: float | None = setting(None, "PGD radius ε (None: the paper's per dataset)")
    step_size: float | None = setting(None, "PGD step size (None: the paper's per dataset)")
    attack_steps: int | None = setting(None, "PGD iterations (None: the paper's 7)")
    robust_samples: int = setting(1000, "test images of the final robust evaluation (an AutoAttack-style ensemble: "
                                        "FGSM, PGD-20, APGD-CE, APGD-T, at the PGD radius) of each trained model; "
                                        "0: off")
    apgd_steps: int = setting(100, "APGD iterations per run in the final robust evaluation")
    eps_warmup: float = setting(0.0, "AT only: ramp the training attack's ε (and step) linearly from 0 over "
                                     "this many epochs, per optimizer step (0: full ε from the first step, as "
                                     "in the paper); evaluation always uses the full ε")

    def __post_init__(self):
        _positive_int("robust_samples", self.robust_samples, minimum=0)
        _positive_int("apgd_steps", self.apgd_steps)
        if isinstance(self.eps_warmup, bool) or not 0 <= float(self.eps_warmup) < float("inf"):
            raise ValueError(f"eps_warmup must be a number of epochs ≥ 0 (0: no warm-up); got {self.eps_warmup}.")
        # ε, step and steps for images in [0, 1], the pipeline's range (jaxmi.attacks checks its own arguments).
        if self.eps is not None and not 0 <= self.eps <= 1:
            raise ValueError(f"attack eps must be in [0, 1] (an L∞ radius in pixel units of images in [0, 1]); got "
                             f"{self.eps}. Give it as a fraction of the pixel range, e.g. --eps 0.0314 for 8/255.")
        if self.step_size is not None and not 0 < self.step_size < float("inf"):
            raise ValueError(f"attack step size must be > 0 and finite; got {self.step_size}.")
        if self.attack_steps is not None and (isinstance(self.attack_steps, bool) or
                                              int(self.attack_steps) != self.attack_steps or self.attack_steps < 0):
            raise ValueError(f"attack steps must be a non-negative integer (static, not traced); got "
                             f"{self.attack_steps}.")

    def warmup_steps(self, steps_per_epoch: int) -> int:
        """The warm-up in optimizer steps (:func:`jaxmi.training.make_train_step`'s ``eps_warmup_steps``)."""
        return int(round(float(self.eps_warmup) * int(steps_per_epoch)))

    def resolve(self, dataset: str) -> tuple[float, float, int]:
        """``(eps, step_size, steps)`` for ``dataset``: the paper's values (:data:`DEFAULT_ATTACKS`)
        unless set (:func:`jaxmi.plan.pgd_config` makes the attack of them)."""
        eps, step, steps = DEFAULT_ATTACKS.get(dataset, DEFAULT_ATTACKS["cifar10"])
        return (eps if self.eps is None else self.eps, step if self.step_size is None else self.step_size,
                steps if self.attack_steps is None else self.attack_steps)


@dataclasses.dataclass(frozen=True)
class MIConfig:
    """The mutual-information measurements."""

    samples: int = setting(5000, "test images per MI measurement (one fixed draw)")
    estimators: tuple[str, ...] = setting(ESTIMATORS, f"MI estimators, a subset of {list(ESTIMATORS + OPTIONAL_ESTIMATORS)} "
                                                             f"(knn: I(T;Y) only)", nargs="+")
    noise_var: float = setting(0.1, "KDE noise variance σ² (the paper's 0.1)")
    bin_size: float = setting(0.5, "binning width (the paper's 0.5)")
    noise_scale: str = setting("absolute", "σ² as given (absolute, the paper's protocol) or in units of each "
                                           "layer's mean squared distance to its centroid (relative)",
                               choices=("absolute", "relative"))
    bootstrap: int = setting(100, "paired bootstrap resamples of the test draw for every MI estimate: standard "
                                  "errors, and the intervals of the verdicts (0: off)")
    noise_control: bool = setting(True, "also measure every probe on the clean images plus random-sign noise of "
                                        "the attack's size and on uniform-noise images unrelated to the data "
                                        "(finding 1's two controls)")
    sweep: bool = setting(True, "at the first and last measurement, also estimate over the σ² and bin-size grids")
    sweep_noise_vars: tuple[float, ...] = setting(DEFAULT_NOISE_VARS, "the σ² grid of the sweep", nargs="+",
                                                  type=float)
    sweep_bin_sizes: tuple[float, ...] = setting(DEFAULT_BIN_SIZES, "the bin-size grid of the sweep", nargs="+",
                                                 type=float)

    def __post_init__(self):
        _positive_int("samples", self.samples)
        if self.samples < 2:
            raise ValueError(f"samples must be ≥ 2 to estimate mutual information; got {self.samples}.")
        object.__setattr__(self, "estimators", tuple(self.estimators))
        unknown = [m for m in self.estimators if m not in ESTIMATORS + OPTIONAL_ESTIMATORS]
        if unknown or not self.estimators:
            raise ValueError(f"unknown estimator(s) {unknown}; choose from {list(ESTIMATORS + OPTIONAL_ESTIMATORS)}.")
        if not 0 < self.noise_var < float("inf"):
            raise ValueError(f"noise_var must be > 0 and finite; got {self.noise_var}.")
        if not 0 < self.bin_size < float("inf"):
            raise ValueError(f"bin_size must be > 0 and finite; got {self.bin_size}.")
        if self.noise_scale not in ("absolute", "relative"):
            raise ValueError(f"noise_scale must be 'absolute' or 'relative'; got {self.noise_scale!r}.")
        for name in ("sweep_noise_vars", "sweep_bin_sizes"):
            values = tuple(float(v) for v in getattr(self, name))
            if not values or not all(0 < v < float("inf") for v in values):
                raise ValueError(f"{name} must be a non-empty list of values > 0 and finite; got "
                                 f"{getattr(self, name)}.")
            object.__setattr__(self, name, values)
        if int(self.bootstrap) != self.bootstrap or self.bootstrap < 0 or self.bootstrap == 1:
            raise ValueError(f"bootstrap must be 0 (off) or a number of resamples ≥ 2; got {self.bootstrap}.")


@dataclasses.dataclass(frozen=True)
class ExecConfig:
    """How a run executes; changes speed and memory, not results, so not part of its identity."""

    devices: int | None = setting(None, "local devices to shard each batch over (None: all)")
    loop: str = setting("auto", "epoch loop: scan, unrolled, or auto (by platform)", choices=LOOPS)
    seed_loop: str = setting("auto", "how stacked seeds share a program: vmap, map, or auto (by platform)",
                             choices=SEED_LOOPS)
    eval_batch_size: int = setting(500, "images per compiled evaluation batch (memory only)")
    attack_loop: str = setting("auto", "PGD iterations: unrolled, scan (a compiled loop), or auto (unrolled on CPU)",
                               choices=LOOPS)
    kde_precision: str = setting("auto", "KDE matrix-product precision: highest, high, default, or auto (high "
                                         "on TPU, highest elsewhere)", choices=KDE_PRECISIONS)
    compile_cache: str | None = setting(None, "directory of JAX's persistent compilation cache (reruns and "
                                              "resumed runs skip compilation)", metavar="DIR")

    def __post_init__(self):
        if self.devices is not None:
            _positive_int("devices", self.devices)
        for what, value, known in (("loop strategy", self.loop, LOOPS), ("seed loop", self.seed_loop, SEED_LOOPS),
                                   ("attack loop", self.attack_loop, LOOPS),
                                   ("KDE precision", self.kde_precision, KDE_PRECISIONS)):
            if value not in known:
                raise ValueError(f"unknown {what} {value!r}; choose one of {list(known)}.")
        _positive_int("eval_batch_size", self.eval_batch_size)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig,
                             "attack": AttackConfig, "mi": MIConfig, "exec": ExecConfig}
_RUN_FIELDS = ("seed", "seeds")


def flat_fields() -> dict[str, tuple[str | None, dataclasses.Field]]:
    """``{flat name: (section or None, field)}`` for every field of :class:`Config`."""
    out: dict[str, tuple[str | None, dataclasses.Field]] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out[f.name] = (section, f)
    for f in dataclasses.fields(Config):
        if f.name in _RUN_FIELDS:
            out[f.name] = (None, f)
    return out


@dataclasses.dataclass(frozen=True)
class Config:
    """One NT-vs-AT run; see the module docstring. Build it with :func:`make_config`."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
    mi: MIConfig = dataclasses.field(default_factory=MIConfig)
    exec: ExecConfig = dataclasses.field(default_factory=ExecConfig)
    seed: int = setting(0, "seed of initial weights, data order, attack noise and the MI draw")
    seeds: int = setting(1, "train K seeds (seed, seed+1, ...) in one compiled program; verdicts as mean ± sd")

    def __post_init__(self):
        _positive_int("seed", self.seed, minimum=0)
        _positive_int("seeds", self.seeds)
        if self.data.eval_samples is not None and self.data.eval_samples < self.mi.samples:
            raise ValueError(f"eval_samples ({self.data.eval_samples}) must be ≥ samples ({self.mi.samples}): the MI "
                             "draw is part of the evaluation set.")

    def attack_values(self) -> tuple[float, float, int]:
        """``(eps, step_size, steps)`` of this run's PGD (the paper's per dataset unless set)."""
        return self.attack.resolve(self.data.dataset)

    # ---- dict forms

    def to_dict(self) -> dict[str, Any]:
        """Nested: ``{"data": {...}, ..., "exec": {...}, "seed": s, "seeds": k}``."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every field by its flat name (``summary.json``'s ``config``)."""
        out = {}
        for name, (section, f) in flat_fields().items():
            owner = self if section is None else getattr(self, section)
            value = getattr(owner, f.name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def identity(self) -> dict[str, Any]:
        """The flat fields that make a run the same run (all but the ``exec`` section)."""
        fields = flat_fields()
        return {k: v for k, v in self.flat().items() if fields[k][0] != "exec"}

    def replace(self, **flat_overrides: Any) -> "Config":
        """A copy with fields replaced by flat name (``None`` values are ignored)."""
        return make_config("paper", base=self, **flat_overrides)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """The inverse of :meth:`to_dict` and of :meth:`flat` (missing fields take their
        defaults; unknown keys are refused)."""
        if any(isinstance(d.get(s), Mapping) for s in SECTIONS):  # nested ("model" is also a flat name)
            flat: dict[str, Any] = {k: v for k, v in d.items() if k in _RUN_FIELDS}
            fields = flat_fields()
            by_section = {(s, f.name): name for name, (s, f) in fields.items()}
            for section in SECTIONS:
                for k, v in (d.get(section) or {}).items():
                    if (section, k) not in by_section:
                        raise ValueError(f"unknown configuration key {section}.{k}")
                    flat[by_section[(section, k)]] = v
            unknown = sorted(set(d) - set(SECTIONS) - set(_RUN_FIELDS))
            if unknown:
                raise ValueError(f"unknown configuration keys {unknown}")
            d = flat
        return make_config("paper", **{k: v for k, v in d.items()}, keep_none=True)


# Presets (flat overrides): the paper's setting (accelerators), a CPU run, and a seconds-long
# smoke run used by the end-to-end tests.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # 20 epochs at the rate the published code actually trained at: its scheduler is stepped per
    # batch, so the rate is 0.025 after 60 iterations.
    "cpu": {"epochs": 20, "learning_rate": 0.025},
    "smoke": {"epochs": 1, "train_examples": 512, "batch_size": 64, "samples": 128, "eval_samples": 256,
              "eval_batch_size": 128, "robust_samples": 64, "apgd_steps": 10, "bootstrap": 20},
}


def make_config(preset: str = "paper", *, base: Config | None = None, keep_none: bool = False,
                **overrides: Any) -> Config:
    """A :class:`Config` from a preset (or ``base``) plus flat-name overrides.

    Args:
      preset: a name in :data:`PRESETS` (ignored when ``base`` is given).
      base: start from this config instead of a preset.
      keep_none: apply ``None`` overrides (they otherwise mean "keep").
      **overrides: flat field names (:meth:`Config.flat`).
    """
    if base is None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
        values = dict(PRESETS[preset])
        start = Config()
    else:
        values, start = {}, base
    values.update({k: v for k, v in overrides.items() if keep_none or v is not None})
    fields = flat_fields()
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown configuration keys {unknown}; known: {sorted(fields)}")
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    run: dict[str, Any] = {}
    for name, value in values.items():
        section, f = fields[name]
        if isinstance(value, list):
            value = tuple(value)
        (run if section is None else sections[section])[f.name] = value
    parts = {s: dataclasses.replace(getattr(start, s), **kw) for s, kw in sections.items() if kw}
    return dataclasses.replace(start, **parts, **run)


def normalize_identity(d: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run identity in today's form: its configuration fields (flat, possibly written by
    an older version, with ``exec`` fields or without fields added since) become
    :meth:`Config.identity`; other keys (a finding's options) stay as they are."""
    fields = flat_fields()
    own = {k: v for k, v in d.items() if k in fields}
    rest = {k: v for k, v in d.items() if k not in fields}
    return {**(Config.from_dict(own).identity() if own else {}), **rest}

"""The NT-vs-AT training run with mutual-information measurements, shared by the findings.

:func:`train_and_measure` trains a normally trained (NT) and a PGD adversarially trained
(AT) copy of one model from the same initial weights and, at epoch 0 and after every epoch,
measures on the test set:

* clean and PGD accuracy and loss (the evaluation attack starts from the clean image);
* for every probe layer, I(X;T) and I(T;Y) with every estimator, on clean inputs and on
  adversarial inputs of one fixed random draw of ``samples`` test images (the same draw for
  clean and adversarial, and for every epoch, so the curves are paired).

Training metrics are the epoch means over the examples trained on (PGD examples for AT);
at epoch 0 they are evaluated on ``samples`` training images (AT: PGD examples).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import data as data_lib
from jaxmi import estimators, parallel, progress
from jaxmi.checkpoint import CheckpointError, RunCheckpointer, load_models, plain, save_model
from jaxmi.attacks import PGDConfig
from jaxmi.models import MODELS, PRECISIONS, create_model
from jaxmi.training import (OptimConfig, create_train_state, create_train_states, epoch_means, make_evaluator,
                            make_optimizer, make_train_epoch, unstack_seeds)

__all__ = ["Config", "PRESETS", "DEFAULT_ATTACKS", "make_config", "add_common_flags", "config_from_args",
           "train_and_measure", "CONFIG_DEFAULTS", "MODES", "log_line", "load_trained", "config_from_dict", "make_run_mesh"]

MODES = ("nt", "at")

# The paper's L∞ PGD settings per dataset: (ε, step size, steps).
DEFAULT_ATTACKS: dict[str, tuple[float, float, int]] = {
    "mnist": (45 / 255, 8 / 255, 7),
    "fashion_mnist": (45 / 255, 8 / 255, 7),
    "cifar10": (8 / 255, 2 / 255, 7),
    "stl10": (4 / 255, 2 / 255, 7),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """One NT-vs-AT run. Every field is a plain value so the config round-trips through JSON."""

    dataset: str = "mnist"  # see jaxmi.data.DATASETS; any TFDS dataset as "tfds:<name>" (online)
    model: str = "lenet"  # "lenet", "mlp" or "wrn"
    data_dir: str | None = None  # local copy (IDX / CIFAR batches / image folders / TFDS dir); None: default source
    epochs: int = 200  # training epochs (the paper: 200)
    batch_size: int = 128  # SGD minibatch
    learning_rate: float = 0.1  # initial SGD rate
    momentum: float = 0.9
    milestones: tuple[int, ...] = (20, 60)  # epochs at which the rate is halved
    eps: float | None = None  # PGD radius; None: the paper's value for the dataset
    step_size: float | None = None  # PGD step; None: the paper's value
    attack_steps: int | None = None  # PGD iterations; None: the paper's value (7)
    samples: int = 5000  # test images per MI measurement (one fixed draw)
    eval_samples: int | None = None  # test images for accuracy/loss; None: the whole test split
    train_examples: int | None = None  # use only the first n training images (smoke runs); None: all
    estimators: tuple[str, ...] = estimators.METHODS  # MI estimators to run
    noise_var: float = 0.1  # KDE σ²
    bin_size: float = 0.5  # binning width
    seed: int = 0  # one seed for initial weights, data order, attack noise and the MI draw
    eval_batch_size: int = 500  # images per compiled evaluation batch (memory only)
    loop: str = "auto"  # epoch loop strategy: "auto", "scan", "unrolled" (see jaxmi.training.resolve_loop)
    devices: int | None = None  # local devices to shard each batch over (data parallelism); None: all
    precision: str = "float32"  # layer compute dtype: "float32" or "bfloat16" (mixed precision, accelerators)
    seeds: int = 1  # K > 1: train seeds seed..seed+K-1 in one compiled program and report mean ± sd across them
    bootstrap: int = 0  # R ≥ 2: bootstrap standard errors of every MI estimate from R resamples (0: off)


    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)}.")
        for name in ("epochs", "samples", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if int(v) != v or v < (0 if name == "epochs" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'epochs' else 'positive'} integer; got {v}.")
        if self.samples < 2:
            raise ValueError(f"samples must be ≥ 2 to estimate mutual information; got {self.samples}.")
        unknown = [m for m in self.estimators if m not in estimators.METHODS]
        if unknown or not self.estimators:
            raise ValueError(f"unknown estimator(s) {unknown}; choose from {list(estimators.METHODS)}.")
        if not self.noise_var > 0:
            raise ValueError(f"noise_var must be > 0; got {self.noise_var}.")
        if not self.bin_size > 0:
            raise ValueError(f"bin_size must be > 0; got {self.bin_size}.")
        if self.eval_samples is not None and self.eval_samples < self.samples:
            raise ValueError(f"eval_samples ({self.eval_samples}) must be ≥ samples ({self.samples}): the MI draw is part of the evaluation set.")
        if self.devices is not None and (int(self.devices) != self.devices or self.devices < 1):
            raise ValueError(f"devices must be a positive integer (or None for all); got {self.devices}.")
        if self.train_examples is not None and self.train_examples < 1:
            raise ValueError(f"train_examples must be ≥ 1; got {self.train_examples}.")
        if int(self.seeds) != self.seeds or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer; got {self.seeds}.")
        if self.seeds > 1 and self.devices not in (None, 1):
            raise ValueError(f"seeds={self.seeds} trains the seeds together on one device and cannot be combined "
                             f"with devices={self.devices}; pass --devices 1, or --seeds 1 for data parallelism.")
        if int(self.bootstrap) != self.bootstrap or self.bootstrap < 0 or self.bootstrap == 1:
            raise ValueError(f"bootstrap must be 0 (off) or a number of resamples ≥ 2; got {self.bootstrap}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {sorted(PRECISIONS)}.")
        if self.loop not in ("auto", "scan", "unrolled"):
            raise ValueError(f"unknown loop strategy {self.loop!r}; choose 'auto', 'scan' or 'unrolled'.")
        self.attack()  # validates ε, step, steps

    def attack(self, *, random_start: bool = False) -> PGDConfig:
        """The PGD attack: the paper's per-dataset values unless overridden."""
        eps, step, steps = DEFAULT_ATTACKS.get(self.dataset, DEFAULT_ATTACKS["cifar10"])
        return PGDConfig(eps=eps if self.eps is None else self.eps,
                         step_size=step if self.step_size is None else self.step_size,
                         steps=steps if self.attack_steps is None else self.attack_steps,
                         random_start=random_start)

    def optim(self) -> OptimConfig:
        return OptimConfig(learning_rate=self.learning_rate, momentum=self.momentum,
                           milestones=tuple(self.milestones), batch_size=self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields added after the first runs were written: a stored config.json without them matches
# when they hold these values (see jaxmi.results.prepare_run_dir).
CONFIG_DEFAULTS: dict[str, Any] = {"devices": None, "precision": "float32", "seeds": 1, "bootstrap": 0}

# Presets: the paper's setting (for accelerators), a CPU run documented in the README, and a
# seconds-long smoke run used by the end-to-end tests.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # 20 epochs at the rate the published code actually trained at: its scheduler is stepped per
    # batch, so the rate is 0.025 after 60 iterations. (At 0.1 with no decay inside 20 epochs,
    # NT LeNet plateaus near 98.0 % clean accuracy, in this code and in a PyTorch reference alike.)
    "cpu": {"epochs": 20, "learning_rate": 0.025},
    "smoke": {"epochs": 1, "train_examples": 512, "batch_size": 64, "samples": 128, "eval_samples": 256,
              "eval_batch_size": 128},
}


def make_config(preset: str = "paper", **overrides) -> Config:
    """A :class:`Config` from a preset name plus explicit overrides (``None`` means "keep")."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    fields = dict(PRESETS[preset])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if "estimators" in fields:
        fields["estimators"] = tuple(fields["estimators"])
    if "milestones" in fields:
        fields["milestones"] = tuple(fields["milestones"])
    return Config(**fields)


def add_common_flags(parser: argparse.ArgumentParser, *, default_out: str) -> None:
    """The flags every experiment script shares."""
    parser.add_argument("--preset", default="paper", help=f"one of {sorted(PRESETS)} (default: paper)")
    parser.add_argument("--dataset", help="dataset name (default: mnist)")
    parser.add_argument("--model", help=f"one of {sorted(MODELS)} (default: lenet)")
    parser.add_argument("--data-dir", help="local dataset directory (IDX, CIFAR batches, image folders, TFDS dir)")
    parser.add_argument("--epochs", type=int, help="training epochs")
    parser.add_argument("--samples", type=int, help="test images per MI measurement (default 5000)")
    parser.add_argument("--eval-samples", type=int, help="test images for accuracy (default: all)")
    parser.add_argument("--train-examples", type=int, help="use only the first n training images")
    parser.add_argument("--batch-size", type=int, help="SGD batch size (default 128)")
    parser.add_argument("--lr", dest="learning_rate", type=float, help="initial learning rate (default 0.1)")
    parser.add_argument("--eps", type=float, help="PGD radius (default: the paper's per dataset)")
    parser.add_argument("--step-size", type=float, help="PGD step size")
    parser.add_argument("--attack-steps", type=int, help="PGD iterations")
    parser.add_argument("--estimators", nargs="+", help=f"subset of {list(estimators.METHODS)}")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--devices", type=int, help="local devices to shard each batch over (default: all)")
    parser.add_argument("--precision", choices=sorted(PRECISIONS),
                        help="layer compute dtype (default float32; bfloat16 = mixed precision for GPUs/TPUs)")
    parser.add_argument("--seeds", type=int,
                        help="train K seeds (seed, seed+1, ...) in one compiled program and report every verdict "
                             "as mean ± sd across them, with bands in the figures (default 1)")
    parser.add_argument("--bootstrap", type=int,
                        help="bootstrap resamples for standard errors of every MI estimate (default 0: off)")
    parser.add_argument("--out", default=None, help=f"output directory (default: {default_out})")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in --out, replacing the run (and checkpoints) there; without it a "
                             "different run is refused and the same run resumes from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


_CONFIG_FLAGS = ("dataset", "model", "data_dir", "epochs", "samples", "eval_samples", "train_examples",
                 "batch_size", "learning_rate", "eps", "step_size", "attack_steps", "estimators", "seed", "devices",
                 "precision", "seeds", "bootstrap")


def config_from_args(args: argparse.Namespace) -> Config:
    return make_config(args.preset, **{k: getattr(args, k) for k in _CONFIG_FLAGS})


# --------------------------------------------------------------------------------------


def _nan_list(n: int) -> list[float]:
    return [float("nan")] * n


def _empty_history(config: Config) -> dict[str, Any]:
    def mi():
        return {m: {"clean": {"I_XT": [], "I_TY": []}, "adv": {"I_XT": [], "I_TY": []}} for m in config.estimators}

    keys = ("train_acc", "train_loss", "test_clean_acc", "test_adv_acc", "test_clean_loss", "test_adv_loss")
    return {mode: {**{k: [] for k in keys}, "mi": mi()} for mode in MODES}


def _empty_timing() -> dict[str, Any]:
    return {mode: {"epoch_seconds": [], "measure_seconds": []} for mode in MODES}


def load_data(config: Config):
    """Training and test splits as uint8 device arrays, plus dataset metadata."""
    info = data_lib.dataset_info(config.dataset) if config.dataset in data_lib.DATASETS else None
    train = data_lib.load_dataset(config.dataset, "train", data_dir=config.data_dir,
                                  max_examples=config.train_examples)
    test = data_lib.load_dataset(config.dataset, "test", data_dir=config.data_dir)
    if len(test) < config.samples:
        raise ValueError(f"samples={config.samples} exceeds the {len(test)} test images of {config.dataset}; "
                         "lower --samples.")
    return train, test, (info.augment if info is not None else False)


def log_line(message: str) -> None:
    """The default logger: one flushed line on stdout (visible at once when redirected to a file)."""
    print(message, flush=True)


def make_run_mesh(config: Config, log: Callable[[str], None] | None = None) -> jax.sharding.Mesh:
    """The ``data`` mesh a run trains on: ``config.devices`` local devices (all by default).

    With all devices requested, the count is lowered to the largest one that divides the batch
    size (and logged); an explicit ``devices`` that does not divide it is an error.
    """
    available = len(jax.local_devices())
    if config.devices is not None:
        if config.devices > available:
            raise ValueError(f"devices={config.devices} but only {available} local "
                             f"{jax.default_backend()} device(s) exist; pass --devices {available} or fewer.")
        if config.batch_size % config.devices:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by devices={config.devices}; "
                             "choose a batch size that is a multiple of the device count, or other --devices.")
        n = config.devices
    else:
        n = parallel.usable_device_count(config.batch_size, available)
        if n != available and log is not None:
            log(f"using {n} of {available} devices: batch size {config.batch_size} is not divisible by {available}")
    return parallel.make_mesh(n)


def train_and_measure(config: Config, *, log: Callable[[str], None] = log_line, show_progress: bool = True,
                      workdir: str | os.PathLike | None = None, mesh: jax.sharding.Mesh | None = None
                      ) -> dict[str, Any]:
    """Trains NT and AT from the same initial weights, measuring MI at epoch 0 and after every epoch.

    Each batch is split over the devices of ``mesh`` (data parallelism; parameters and
    optimizer state replicated), and so are the evaluation and attack passes.

    With a ``workdir``, a checkpoint is written after every measurement (``workdir/checkpoints``)
    and the final NT and AT models to ``workdir/models``; a run whose checkpoints are there
    resumes from the last completed epoch (the results are identical to an uninterrupted run's:
    every random key derives from the seed and the epoch).

    Args:
      config: the run's :class:`Config`.
      log: where one-line progress messages go.
      show_progress: show per-epoch progress bars.
      workdir: the run directory for checkpoints and models (it should have been prepared with
        :func:`jaxmi.results.prepare_run_dir`); ``None``: nothing is saved.
      mesh: the device mesh; ``None``: :func:`make_run_mesh` (``config.devices``, default all).

    Returns:
      ``{"layers": [...], "epochs_measured": [...], "nt": history, "at": history,
      "num_classes": int, "data": {...}, "timing": {...}, "resumed_from": ...}`` with the
      per-measurement lists of the summary; ``timing`` holds wall-clock seconds per epoch
      (kept out of the summary so that it is reproducible).

    Raises:
      jaxmi.checkpoint.CheckpointError: the checkpoint in ``workdir`` is unreadable or was
        written by another configuration.
    """
    progress.enabled(show_progress)
    num_seeds = config.seeds
    many = num_seeds > 1
    if many:  # the K runs share one program on one device
        mesh = parallel.make_mesh(1) if mesh is None else mesh
        if mesh.size != 1:
            raise ValueError(f"seeds={num_seeds} runs on one device; got a mesh of {mesh.size} devices.")
    mesh = make_run_mesh(config, log) if mesh is None else mesh
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the mesh's {mesh.size} devices.")
    train_mesh = None if many else mesh
    vm = {"num_seeds": num_seeds} if many else {}
    train, test, augment = load_data(config)
    num_classes = train.num_classes
    module = create_model(config.model, num_classes, precision=config.precision)
    input_shape = tuple(train.images.shape[1:])
    repl = parallel.replicated(mesh)
    x_train, y_train = data_lib.as_device_arrays(train, repl)
    x_test, y_test = data_lib.as_device_arrays(test, repl)
    n_train = int(x_train.shape[0])

    # Seed k of K uses the keys of a single run with seed config.seed + k; the MI draw is seed 0's.
    root = jax.random.key(config.seed)
    k_init, k_train, k_draw = jax.random.split(root, 3)
    optim = config.optim()
    steps_per_epoch = n_train // optim.batch_size
    tx = make_optimizer(optim, steps_per_epoch)
    if many:
        seed_keys = jax.vmap(lambda s: jax.random.split(jax.random.key(s), 3))(config.seed + jnp.arange(num_seeds))
        k_init, k_train = seed_keys[:, 0], seed_keys[:, 1]
        init_state = create_train_states(module, k_init, input_shape, tx)
    else:
        init_state = parallel.replicate(create_train_state(module, k_init, input_shape, tx), mesh)

    def epoch_key(epoch: int):
        return jax.vmap(lambda k: jax.random.fold_in(k, epoch))(k_train) if many else jax.random.fold_in(k_train, epoch)

    # One fixed draw of `samples` test images for MI (the first part of a keyed permutation);
    # accuracy/loss on the first `eval_samples` of the same permutation (the whole split by default).
    perm = np.asarray(jax.random.permutation(k_draw, int(x_test.shape[0])))
    n_eval = int(x_test.shape[0]) if config.eval_samples is None else min(config.eval_samples, int(x_test.shape[0]))
    mi_idx, rest_idx = perm[:config.samples], perm[config.samples:n_eval]
    x_mi, y_mi = x_test[mi_idx], y_test[mi_idx]
    x_rest, y_rest = x_test[rest_idx], y_test[rest_idx]
    y_mi_host = np.asarray(y_mi)
    x_train0, y_train0 = x_train[:config.samples], y_train[:config.samples]
    boot = ({"bootstrap": config.bootstrap, "key": jax.random.fold_in(k_draw, 1)} if config.bootstrap else {})

    eval_attack = config.attack()
    evaluate_probes = make_evaluator(module, eval_attack, batch_size=config.eval_batch_size, with_probes=True,
                                     loop=config.loop, mesh=train_mesh, **vm)
    evaluate = make_evaluator(module, eval_attack, batch_size=config.eval_batch_size, loop=config.loop,
                              mesh=train_mesh, **vm)
    epoch_fns = {
        "nt": make_train_epoch(module, tx, num_examples=n_train, batch_size=optim.batch_size, attack=None,
                               augment=augment, loop=config.loop, mesh=train_mesh, **vm),
        "at": make_train_epoch(module, tx, num_examples=n_train, batch_size=optim.batch_size,
                               attack=config.attack(random_start=True), augment=augment, loop=config.loop,
                               mesh=train_mesh, **vm),
    }
    layers = list(module.probe_names)
    histories = [_empty_history(config) for _ in range(num_seeds)]  # one per seed
    timing = _empty_timing()
    data_info = {"train": train.source, "test": test.source, "train_examples": n_train,
                 "eval_examples": n_eval, "mi_samples": config.samples}

    def per_seed(tree) -> list[Any]:
        return unstack_seeds(tree, num_seeds) if many else [tree]

    def measure(mode: str, state, train_metrics: list[dict[str, float]] | None) -> None:
        r = evaluate_probes(state.params, state.batch_stats, x_mi, y_mi)
        parts = [r]
        if len(rest_idx):
            parts.append(evaluate(state.params, state.batch_stats, x_rest, y_rest))
        host = [jax.device_get({k: v for k, v in p.items() if not k.endswith("_probes")}) for p in parts]
        axis = 1 if many else 0  # the example axis
        cat = {k: np.concatenate([p[k] for p in host], axis=axis) for k in host[0]}
        if train_metrics is None:  # epoch 0: evaluate the initial weights on training images
            t = jax.device_get(evaluate(state.params, state.batch_stats, x_train0, y_train0))
            key = "clean" if mode == "nt" else "adv"
            train_metrics = [{"accuracy": float(tk[f"{key}_correct"].mean()), "loss": float(tk[f"{key}_loss"].mean())}
                             for tk in per_seed(t)]
        for s, (h_all, ck, rk, tm) in enumerate(zip(histories, per_seed(cat), per_seed(r), train_metrics)):
            h = h_all[mode]
            h["test_clean_acc"].append(float(ck["clean_correct"].mean()))
            h["test_adv_acc"].append(float(ck["adv_correct"].mean()))
            h["test_clean_loss"].append(float(ck["clean_loss"].mean()))
            h["test_adv_loss"].append(float(ck["adv_loss"].mean()))
            h["train_acc"].append(tm["accuracy"])
            h["train_loss"].append(tm["loss"])
            for kind in ("clean", "adv"):
                probes = rk[f"{kind}_probes"]
                res = estimators.measure_probes({k: probes[k] for k in layers}, y_mi_host, methods=config.estimators,
                                                num_classes=num_classes, noise_var=config.noise_var,
                                                bin_size=config.bin_size, **boot)
                for m in config.estimators:
                    for q in ("I_XT", "I_TY"):
                        h["mi"][m][kind][q].append(plain(res[m][q]))
                        if config.bootstrap:
                            h.setdefault("mi_se", {}).setdefault(m, {}).setdefault(kind, {}).setdefault(
                                q, []).append(plain(res[m][f"{q}_se"]))

    ckpt = resumed = None
    if workdir is not None:
        ckpt = RunCheckpointer(workdir, config.to_dict(), modes=MODES, epochs=config.epochs)
        resumed = ckpt.restore_latest(init_state)
        if resumed is not None:
            stored = resumed.record["history"]
            histories, timing = (stored if many else [stored]), resumed.record["timing"]
            log(f"resuming from the checkpoint after {resumed.mode.upper()} epoch {resumed.epoch} in "
                f"{ckpt.path}")

    def save(mode: str, epoch: int, state) -> None:
        if ckpt is None:
            return
        if epoch == config.epochs:  # this mode is done: keep its model (before the checkpoint that says so)
            for s, st in enumerate(per_seed(state)):  # seed 0 as "nt"/"at", further seeds as "nt_seed1", ...
                save_model(workdir, mode if s == 0 else f"{mode}_seed{s}", st.params, st.batch_stats,
                           {"config": config.to_dict(), "num_classes": num_classes, "input_shape": list(input_shape),
                            "layers": layers})
        ckpt.save(mode, epoch, state, {"seed": config.seed, "history": histories if many else histories[0],
                                       "timing": timing})

    def line(mode: str) -> str:
        if not many:
            return _line(histories[0][mode])
        return "; ".join(f"seed {config.seed + s}: {_line(h[mode])}" for s, h in enumerate(histories))

    try:
        for mode in MODES:
            start = 0
            if resumed is not None and MODES.index(mode) < MODES.index(resumed.mode):
                continue  # finished before the interruption: its measurements are in the history
            if resumed is not None and mode == resumed.mode:
                state, start = resumed.state, resumed.epoch + 1
            else:
                state = jax.tree.map(jnp.copy, init_state)  # NT and AT start from the same weights
                t0 = time.perf_counter()
                measure(mode, state, None)
                save(mode, 0, state)
                log(f"[{mode.upper()}] epoch 0: {line(mode)} ({time.perf_counter() - t0:.1f} s)")
                start = 1
            for epoch in range(start, config.epochs + 1):
                t0 = time.perf_counter()
                with progress.bar(steps_per_epoch, f"{mode.upper()} epoch {epoch}/{config.epochs}"):
                    state, metrics = epoch_fns[mode](state, x_train, y_train, epoch_key(epoch))
                    means = [epoch_means(m) for m in per_seed(metrics)]
                bad = [m["loss"] for m in means if not np.isfinite(m["loss"])]
                if bad:
                    raise FloatingPointError(f"{mode.upper()} training loss became {bad[0]} in epoch "
                                             f"{epoch}; lower --lr.")
                train_s = time.perf_counter() - t0
                measure(mode, state, means)
                measure_s = time.perf_counter() - t0 - train_s
                timing[mode]["epoch_seconds"].append(train_s)
                timing[mode]["measure_seconds"].append(measure_s)
                save(mode, epoch, state)
                log(f"[{mode.upper()}] epoch {epoch}: {line(mode)} (train {train_s:.1f} s, measure {measure_s:.1f} s)")
    finally:
        if ckpt is not None:
            ckpt.close()
    out = {
        "layers": layers,
        "epochs_measured": list(range(config.epochs + 1)),
        "num_classes": num_classes,
        "data": data_info,
        "timing": {**timing, "devices": mesh.size, "backend": jax.default_backend(), "seeds": num_seeds,
                   "resumed_from": None if resumed is None else {"mode": resumed.mode, "epoch": resumed.epoch}},
    }
    if not many:
        return {**out, **histories[0]}
    return {**out, **aggregate_seeds(histories),
            "seeds": [{"seed": config.seed + s, **h} for s, h in enumerate(histories)]}


def _mean_sd(values: list[Any]) -> tuple[Any, Any]:
    a = np.asarray(values, dtype=float)
    sd = a.std(axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(a.shape[1:])
    return a.mean(axis=0).tolist(), sd.tolist()


def aggregate_seeds(histories: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Seed-mean NT and AT histories with standard deviations across seeds (ddof 1).

    Every metric list becomes its mean over seeds, with ``"<metric>_sd"`` beside it; ``"mi"``
    becomes the mean estimate and ``"mi_sd"`` (same structure) the standard deviation across
    seeds, which the figures draw as bands and bars.
    """
    out: dict[str, Any] = {}
    for mode in MODES:
        hs = [h[mode] for h in histories]
        agg: dict[str, Any] = {}
        for k, v in hs[0].items():
            if k in ("mi", "mi_se"):
                continue
            agg[k], agg[f"{k}_sd"] = _mean_sd([h[k] for h in hs])
        mi, mi_sd = {}, {}
        for est, d in hs[0]["mi"].items():
            mi[est], mi_sd[est] = {}, {}
            for kind, qs in d.items():
                mi[est][kind], mi_sd[est][kind] = {}, {}
                for q in qs:
                    mi[est][kind][q], mi_sd[est][kind][q] = _mean_sd([h["mi"][est][kind][q] for h in hs])
        agg["mi"], agg["mi_sd"] = mi, mi_sd
        out[mode] = agg
    return out


def load_trained(workdir: str | os.PathLike) -> tuple[Config, Any, dict[str, tuple[Any, Any]]]:
    """The configuration, model and trained NT/AT variables of a finished run directory.

    Returns:
      ``(config, module, {"nt": (params, batch_stats), "at": (params, batch_stats)})``; use
      them with :func:`jaxmi.models.apply_model`.

    Raises:
      jaxmi.checkpoint.CheckpointError: ``workdir`` holds no finished run (no trained
        models), or they are unreadable.
    """
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise CheckpointError(f"{workdir} is not a run directory (it does not exist); pass the --out of a "
                              "finished experiment run.")
    meta, variables = load_models(workdir, MODES)
    try:
        config = config_from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the configuration stored with the models in {workdir} is unusable ({e}); "
                              "rerun the experiment with --overwrite.") from None
    module = create_model(config.model, int(meta["num_classes"]), precision=config.precision)
    return config, module, variables


def config_from_dict(d: dict[str, Any]) -> Config:
    """The inverse of :meth:`Config.to_dict` (JSON lists back to tuples; unknown keys refused)."""
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown configuration keys {unknown}")
    d = dict(d)
    for k in ("estimators", "milestones"):
        if k in d and d[k] is not None:
            d[k] = tuple(d[k])
    return Config(**d)


def _line(h: dict[str, Any]) -> str:
    return (f"train acc {h['train_acc'][-1]:.4f} loss {h['train_loss'][-1]:.4f} | test clean "
            f"{h['test_clean_acc'][-1]:.4f} adv {h['test_adv_acc'][-1]:.4f}")


def final(values: Sequence[float]) -> float:
    return float(values[-1])

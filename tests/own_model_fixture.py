"""Small user-defined Flax CNNs (none of jaxmi's) and their factories, for the own-model tests.

Imported by spec, e.g. ``--model own_model_fixture:bn_cnn`` (this directory is on
``sys.path`` under pytest; subprocesses get it through ``PYTHONPATH``). Flax's default
initialisers throughout.
"""

import flax.linen as nn
import jax.numpy as jnp


class SmallCNN(nn.Module):
    """conv 4@3×3 → ReLU (sown as "relu1") → max-pool 2 → conv 8@3×3 → ReLU → max-pool 2 →
    fc 16 → ReLU → fc ``num_classes``. A plain module: no probe names, no ``train`` flag."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))  # "Conv_0"
        self.sow("intermediates", "relu1", h)
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = nn.relu(nn.Conv(8, (3, 3), padding="VALID")(h))  # "Conv_1"
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape(h.shape[0], -1)
        h = nn.relu(nn.Dense(16)(h))  # "Dense_0"
        return nn.Dense(self.num_classes)(h)  # "Dense_1"


class Block(nn.Module):
    """conv (no bias) → BatchNorm → ReLU (sown as "relu")."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Conv(self.features, (3, 3), use_bias=False, name="conv")(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(h)
        h = nn.relu(h)
        self.sow("intermediates", "relu", h)
        return h


class BNCNN(nn.Module):
    """Two BatchNorm blocks (``block1``, ``block2``; the second strided by pooling) and a linear
    classifier; ``train`` switches BatchNorm between batch and running statistics."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = Block(4, name="block1")(x, train)
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = Block(8, name="block2")(h, train)
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        return nn.Dense(self.num_classes, name="head")(h.reshape(h.shape[0], -1))


class ProtocolCNN(nn.Module):
    """A model written to jaxmi's protocol itself: ``probe_names`` and ``(logits, probes)``."""

    num_classes: int = 10
    probe_names: tuple = ("conv", "fc")

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        c = nn.Conv(4, (5, 5), strides=(2, 2))(x)
        logits = nn.Dense(self.num_classes)(nn.relu(c).reshape(x.shape[0], -1))
        return logits, {"conv": c.reshape(x.shape[0], -1), "fc": logits}


SMALL_PROBES = ("Conv_0", "relu1", "Conv_1", "Dense_0", "Dense_1")
BN_PROBES = ("block1/conv", "block2/relu", "head")


def small_cnn(num_classes):
    """The plain CNN and the probes to measure."""
    return SmallCNN(num_classes), SMALL_PROBES


def bn_cnn(num_classes):
    return BNCNN(num_classes), BN_PROBES


def protocol_cnn(num_classes):
    return ProtocolCNN(num_classes)


# ---- factories that do not make a model (error tests)

def plain_module(num_classes):
    return SmallCNN(num_classes)


def not_a_model(num_classes):
    return "small_cnn"


def no_arguments():
    return small_cnn(10)


def wrong_probe(num_classes):
    return SmallCNN(num_classes), ("Conv_0", "conv9")


def dense_logits(x):
    return jnp.asarray(x)


NOT_CALLABLE = 3

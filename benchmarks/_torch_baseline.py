"""The PyTorch baseline for the training and attack benchmarks, written the way the paper's code is.

LeNet (MNIST 28×28×1 or CIFAR-10 32×32×3) with PyTorch's default initialisation, SGD with
momentum, cross-entropy, and L∞ PGD as a Python loop over steps (``torch.autograd.grad`` on
the input, sign step, projection, clamp), one Python loop over minibatches per epoch. The
model is in training mode throughout, as in the paper's training loop. Needs ``torch``
(``pip install torch``; on the CPU machines here ``pip install torch==2.13.0`` takes the
CPU wheel on disk).
"""

from __future__ import annotations

import time

import numpy as np
from _optional import require


def _torch():
    return require("torch")


def lenet(in_channels: int, hw: int, num_classes: int = 10):
    torch = _torch()
    nn = torch.nn
    n = ((hw - 4) // 2 - 4) // 2

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, 6, 5)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * n * n, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, num_classes)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            x = x.flatten(1)
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    return LeNet()


def pgd(model, x, y, *, eps: float, step_size: float, steps: int, random_start: bool):
    """L∞ PGD the way the paper's code writes it: a Python loop over steps."""
    torch = _torch()
    loss_fn = torch.nn.CrossEntropyLoss()
    x_adv = x.clone().detach()
    if random_start:
        x_adv = (x_adv + torch.empty_like(x_adv).uniform_(-eps, eps)).clamp(0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_fn(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()


def train_epoch(model, opt, images: np.ndarray, labels: np.ndarray, *, batch_size: int, attack,
                seed: int = 0) -> tuple[float, float]:
    """One epoch over ``images`` (uint8 NHWC) in a Python loop; returns (seconds, mean loss)."""
    torch = _torch()
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).contiguous()
    y_all = torch.from_numpy(labels.astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y_all), generator=g)
    steps = len(y_all) // batch_size
    model.train()
    losses = []
    t0 = time.perf_counter()
    for s in range(steps):
        idx = perm[s * batch_size:(s + 1) * batch_size]
        x, y = x_all[idx], y_all[idx]
        if attack is not None:
            x = pgd(model, x, y, eps=attack.eps, step_size=attack.step_size, steps=attack.steps, random_start=True)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return time.perf_counter() - t0, float(np.mean(losses))


def make(in_channels: int, hw: int, lr: float = 0.1, momentum: float = 0.9, seed: int = 0):
    torch = _torch()
    torch.manual_seed(seed)
    model = lenet(in_channels, hw)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return model, opt

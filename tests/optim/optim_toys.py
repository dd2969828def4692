"""Tiny seeded models and a regression problem for the optimizer tests."""

from __future__ import annotations

import torch
from torch import nn


class Toy(nn.Module):
    """Three blocks (names give depths 0, 1, 2, 3 via spectra.layers): embed-like stem, two blocks, head."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.stem = nn.Linear(6, 8)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)) for _ in range(2)])
        self.head = nn.Linear(8, 3)
        self.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.stem(x))
        for block in self.blocks:
            x = x + torch.tanh(block(x))
        return self.head(x)


def make_toy(seed: int = 0, dtype: torch.dtype = torch.float32) -> Toy:
    torch.manual_seed(seed)
    return Toy(dtype)


def toy_data(n: int = 32, seed: int = 1, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    w = torch.randn(6, 3, generator=g)
    return x.to(dtype), (torch.sin(x @ w)).to(dtype)


def train(model: nn.Module, opt, steps: int, data=None, scheduler=None) -> list[float]:
    x, y = data if data is not None else toy_data(dtype=next(model.parameters()).dtype)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
    return losses


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


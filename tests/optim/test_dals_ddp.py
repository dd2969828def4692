"""DALS under DistributedDataParallel: 2 gloo processes on CPU equal one process on the whole batch.

Under DDP every rank holds full (unsharded) parameters and the all-reduced mean gradient, so DALS's
trust-ratio norms are of full tensors and both ranks must take exactly the same step as a single
process that sees the concatenated batch.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spectra.optim import DALS

from .optim_toys import make_toy, toy_data

STEPS = 6
KW = dict(lr=0.05, total_steps=STEPS, warmup=2, weight_decay=0.01)


def _groups(model):
    return [{"params": list(m.parameters()), "depth": d}
            for d, m in enumerate([model.stem, model.blocks[0], model.blocks[1], model.head])]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = make_toy()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = DALS(_groups(model), **KW)
        x, y = toy_data()
        xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
        for _ in range(STEPS):
            opt.zero_grad()
            (ddp(xs) - ys).square().mean().backward()
            opt.step()
        torch.save([p.detach().clone() for p in model.parameters()], os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_ranks_match_each_other_and_a_single_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for a, b in zip(*ranks):
        assert torch.equal(a, b)
    model = make_toy()
    opt = DALS(_groups(model), **KW)
    x, y = toy_data()
    for _ in range(STEPS):
        opt.zero_grad()
        (model(x) - y).square().mean().backward()
        opt.step()
    for a, p in zip(ranks[0], model.parameters()):
        torch.testing.assert_close(a, p.detach(), rtol=1e-5, atol=1e-6)

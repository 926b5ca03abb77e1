"""Actnorm's data-dependent init under torch.distributed (two gloo processes on the CPU): each process sees half of
the global batch, and both end with the statistics of the whole batch, equal to one process initialised on all of
it (the trap of DataParallel ports: glow-pytorch #1, where each replica initialised on its own slice)."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from unigen.families.normalizing_flows.layers import ActNorm


def _global_batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.5, 3.0, 1.0]).view(1, 3, 1, 1)
    return torch.randn(8, 3, 4, 4, generator=g) * scale + torch.arange(3.0).view(1, 3, 1, 1)


def _worker(rank: int, world: int, store_path: str, out_path: str) -> None:
    store = dist.FileStore(store_path, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    layer = ActNorm(3).train()
    x = _global_batch().chunk(world)[rank]
    layer(x)
    save_file({k: v.detach().clone().contiguous() for k, v in layer.state_dict().items()}, f"{out_path}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow      # two spawned processes: ~7 CPU-seconds of imports
def test_actnorm_init_agrees_across_processes(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "state")), nprocs=2, join=True)
    states = [load_file(str(tmp_path / f"state.{r}")) for r in range(2)]
    single = ActNorm(3).train()
    single(_global_batch())
    for s in states:
        assert int(s["initialized"]) == 1
        torch.testing.assert_close(s["b"], single.b.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(s["log_s"], single.log_s.detach(), rtol=1e-6, atol=1e-6)
    halves = _global_batch().chunk(2)
    assert not torch.allclose(halves[0].mean((0, 2, 3)), halves[1].mean((0, 2, 3)), atol=1e-2)

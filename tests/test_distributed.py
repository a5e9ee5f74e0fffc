"""Data-parallel training with 2 gloo processes on 127.0.0.1: the same step as one process with the whole batch."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusion_studio.core.train import distributed
from diffusion_studio.core.io.checkpoint import load_checkpoint
from diffusion_studio.core.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
STEPS, LOCAL_BATCH = 3, 4

# Shared by the worker processes and the reference run in this process.
SETUP = textwrap.dedent("""
    import torch
    from diffusion_studio.core.diffusion.schedule import NoiseSchedule
    from diffusion_studio.core.train.trainer import TensorImages, TrainConfig
    from diffusion_studio.core.nets.unet import UNetConfig

    def setup(steps, batch):
        images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
        model = UNetConfig(image_size=8, in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                           attn_resolutions=(4,), groups=4, num_heads=2)
        cfg = TrainConfig(steps=steps, batch_size=batch, lr=1e-3, warmup_steps=0, seed=3, device="cpu",
                          precision="fp32", channels_last=False, ema_decay=0.9, buckets=4, flip=True)
        return model, NoiseSchedule.create("linear", T=50), TensorImages(images), cfg
""")

WORKER = SETUP + textwrap.dedent("""
    import sys
    from safetensors.torch import save_file
    from diffusion_studio.core.train import distributed
    from diffusion_studio.core.train.trainer import Trainer

    torch.set_num_threads(1)
    out, steps, global_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ctx = distributed.init("cpu", timeout_s=60)
    model, schedule, data, cfg = setup(steps, global_batch)
    trainer = Trainer(model, schedule, data, cfg, out=out + "/run/checkpoint.json")
    for ev in trainer.run():
        pass
    trainer.save()
    save_file({**{"model." + k: v.contiguous() for k, v in trainer.model.state_dict().items()},
               **{"ema." + k: v.contiguous() for k, v in trainer.ema.state_dict().items()}},
              f"{out}/rank{ctx.rank}.safetensors")
    distributed.shutdown()
""")


def _run_ranks(tmp_path: Path, world: int, steps: int, global_batch: int) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = distributed.free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path), str(steps), str(global_batch)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for rank, p in enumerate(procs):
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, f"rank {rank} failed:\n{out}"


def _setup(steps, batch):
    ns: dict = {}
    exec(SETUP, ns)
    return ns["setup"](steps, batch)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    _run_ranks(tmp, 2, STEPS, 2 * LOCAL_BATCH)
    return tmp


def test_two_ranks_take_the_same_steps_as_one_process_with_the_whole_batch(two_rank_run):
    model, schedule, data, cfg = _setup(STEPS, 2 * LOCAL_BATCH)
    reference = Trainer(model, schedule, data, cfg)
    # What each rank drew: rank 0's streams are the single-process seeds, rank 1's are seeded by (seed, 1).
    ranks = [Trainer(*_setup(STEPS, LOCAL_BATCH)) for _ in range(2)]
    ranks[1].gen.manual_seed(distributed.rank_seed(cfg.seed, 1))
    ranks[1].noise_gen.manual_seed(distributed.rank_seed(cfg.seed + 1, 1))

    def both(n):
        (t0, x0, y0, e0), (t1, x1, y1, e1) = (r._draw_batch(n // 2) for r in ranks)
        assert y0 is None and y1 is None
        assert not torch.equal(x0, x1) or not torch.equal(t0, t1)  # the ranks really drew different examples
        return torch.cat([t0, t1]), torch.cat([x0, x1]), None, torch.cat([e0, e1])

    reference._draw_batch = both
    for _ in reference.run():
        pass
    assert reference.step == STEPS
    rank0, rank1 = (load_file(two_rank_run / f"rank{r}.safetensors") for r in range(2))
    initial = Trainer(*_setup(STEPS, LOCAL_BATCH)).model.state_dict()
    moved = 0.0
    for k, v in reference.model.state_dict().items():
        torch.testing.assert_close(rank0[f"model.{k}"], v, atol=2e-6, rtol=1e-5, msg=k)
        moved = max(moved, float((v - initial[k]).abs().max()))
    assert moved > 1e-3  # the weights did train: agreement is not two untouched copies
    for k, v in reference.ema.state_dict().items():
        torch.testing.assert_close(rank0[f"ema.{k}"], v, atol=2e-6, rtol=1e-5, msg=k)
    for k in rank0:  # parameters and EMA identical across ranks
        torch.testing.assert_close(rank1[k], rank0[k], atol=1e-7, rtol=0, msg=k)


def test_checkpoint_written_once_and_resumed_on_one_process(two_rank_run):
    run = two_rank_run / "run"
    assert sorted(p.name for p in run.glob("*.json")) == ["checkpoint.json"]
    assert len(list(run.glob("*.safetensors"))) == 1
    ckpt = load_checkpoint(run / "checkpoint.json")
    assert ckpt.step == STEPS
    assert {"data", "noise", "data.r1", "noise.r1"} <= set(ckpt.tensors["rng"])  # each rank's streams kept
    _, _, data, _ = _setup(STEPS, 2 * LOCAL_BATCH)
    trainer = Trainer.resume(ckpt, data, steps=STEPS + 2)
    assert trainer.dist.world_size == 1 and trainer.step == STEPS
    rank0 = load_file(two_rank_run / "rank0.safetensors")
    for k, v in trainer.ema.state_dict().items():
        torch.testing.assert_close(v, rank0[f"ema.{k}"], atol=0, rtol=0, msg=k)  # stored, not recomputed
    events = list(trainer.run())
    assert [e.step for e in events] == [STEPS + 1, STEPS + 2]
    assert all(torch.isfinite(torch.tensor(e.loss)) for e in events)


def test_batch_must_split_evenly_and_single_process_seeds_are_unchanged():
    ctx = distributed.Context(rank=1, world_size=3)
    with pytest.raises(ValueError, match="batch_size: the global batch 8 does not split evenly over 3"):
        ctx.local_batch(8)
    assert ctx.local_batch(9) == 3
    assert distributed.rank_seed(5, 0) == 5  # one process draws exactly what it drew before data parallelism
    assert len({distributed.rank_seed(5, r) for r in range(8)}) == 8
    assert distributed.current().world_size == 1 and not distributed.current().active

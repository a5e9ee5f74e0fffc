"""How well the up-front memory check (core/runtime/memory.py) predicts a training step: for each network × size ×
batch, its estimate beside the peak resident memory a real run of two AdamW steps reaches, each in a fresh process.

    python bench/bench_memory.py            # about a minute on 2 cores

The estimate counts the outputs of every leaf module (the activations backward needs) on the meta device. A real
step also holds their gradients and each op's temporaries (attention scores above all), so it needs more: the
check refuses only what cannot fit even by the estimate, and sizes its advice ("a batch of N should fit") by the
largest ratio measured here (ACTIVATION_UPPER)."""
from __future__ import annotations

import json
import subprocess
import sys

from common import footer, header

CASES = [("micro", 8, 1, 256), ("tiny", 8, 1, 256), ("tiny", 32, 3, 64), ("small", 32, 3, 64), ("small", 64, 1, 8),
         ("small", 64, 1, 32), ("base", 32, 3, 32), ("base", 64, 3, 8)]

CHILD = r"""
import copy, json, resource, sys, torch
from diffusion_studio.core.nets.unet import preset_config
from diffusion_studio.core.nets.networks import build_network
from diffusion_studio.core.runtime.memory import training_bytes
torch.set_num_threads(1)
preset, size, ch, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = preset_config(preset, size, ch)
need, state = training_bytes(cfg, batch)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
net = build_network(cfg)
ema = copy.deepcopy(net)
opt = torch.optim.AdamW(net.parameters())
x, t = torch.randn(batch, ch, size, size), torch.randint(0, 1000, (batch,))
for _ in range(2):
    loss = (net(x, t) - x).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"estimate": need, "state": state, "measured": r1 - r0}))
"""


def main() -> int:
    header("bench_memory: the training-step estimate against a real step's peak memory")
    rows = []
    print(f"{'network':8s} {'size':>5s} {'batch':>5s} {'estimate MiB':>13s} {'measured MiB':>13s} "
          f"{'activations: measured / estimate':>34s}")
    for preset, size, ch, batch in CASES:
        out = subprocess.run([sys.executable, "-c", CHILD, preset, str(size), str(ch), str(batch)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = (r["measured"] - r["state"]) / max(1, r["estimate"] - r["state"])
        rows.append(ratio)
        print(f"{preset:8s} {size:5d} {batch:5d} {r['estimate'] / 2**20:13.0f} {r['measured'] / 2**20:13.0f} "
              f"{ratio:34.2f}")
    print(f"\nratio: least {min(rows):.2f}, most {max(rows):.2f}")
    footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())

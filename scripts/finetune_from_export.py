"""Train an exported model further: a fresh run whose weights (and EMA) start from an exported checkpoint's EMA
weights — an export keeps no optimizer state, so `train --resume` cannot continue it.

    python scripts/finetune_from_export.py builtin:shapes -- --data builtin:shapes --autoencoder builtin:shapes-ae \
        --text --p-uncond 0.15 --model tiny --steps 24000 --batch 64 --lr 5e-4 --seed 1 --out runs/shapes-more

Everything after `--` is `diffusion-studio train`'s own arguments (they must build the same network as the export's:
same data shape, preset, conditioning and autoencoder); the run then behaves like any other (Ctrl+C saves, --resume
continues it, `diffusion-studio export` ships it). The AdamW moments start at zero and the learning rate warms up
again, so the first steps move the weights little.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def trainer_from_export(source: str, train_args: list[str]):
    """The fresh run of ``train_args`` (`diffusion-studio train`'s arguments) with the weights and the EMA of the
    exported checkpoint ``source`` (a path or builtin:NAME); ValueError when the two networks differ."""
    from diffusion_studio.cli import build_parser
    from diffusion_studio.cli.train_setup import setup_fresh
    from diffusion_studio.core.io.checkpoint import load_checkpoint
    from diffusion_studio.resources import resolve_model_spec

    parser, _ = build_parser("train")
    args = parser.parse_args(["train", *train_args])
    out = Path(args.out).expanduser()
    start = load_checkpoint(resolve_model_spec(source))
    weights = start.tensors.get("ema") or start.tensors["model"]
    trainer, _ = setup_fresh(args, out, out / "checkpoint.json")
    try:
        trainer.model.load_state_dict(weights)
        trainer.ema.load_state_dict(weights)
    except RuntimeError as e:  # torch names every missing, unexpected and mis-shaped tensor
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()] or [str(e)]
        raise ValueError(f"{source}: not the network these arguments build ({lines[0][:200]})") from None
    print(f"from {source} (step {start.step}): {sum(v.numel() for v in weights.values()):,} weights", flush=True)
    return trainer


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1:
        print(__doc__)
        return 2
    trainer = trainer_from_export(argv[0], argv[2:])
    last = None
    try:
        for ev in trainer.run():
            last = ev
            if ev.step % 500 == 0:
                print(f"step {ev.step}  loss {ev.loss:.4f}  {ev.images_per_s:.0f} img/s", flush=True)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    path = trainer.save()  # into the run's --out, which the trainer was built with
    print(f"saved {path} at step {trainer.step}" + (f", last loss {last.loss:.4f}" if last else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Files: safe reads, atomic writes, run locks, checkpoints and their manifest, autoencoders, diffusers folders."""

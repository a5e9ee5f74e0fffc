"""Training: Algorithm 1 as a generator (Trainer), its config and recipe, latent and multi-process runs, run logs."""

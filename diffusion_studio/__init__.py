"""Diffusion Studio: see DDPM happen — forward noising, schedules, training and reverse sampling."""

__version__ = "0.1.0"

"""The networks: the UNet ε_θ, its conditioning (classes, captions), the frozen text encoder, the autoencoder."""

"""The Autoencoder tab: train or open the autoencoder a latent model runs on, and see its reconstructions."""

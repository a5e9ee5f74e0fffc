"""Qt-free work that the app's workers and the CLI both run: sampling, training runs, likelihood, autoencoder."""

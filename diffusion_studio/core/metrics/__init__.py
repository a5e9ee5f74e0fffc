"""Sample quality: FID and its feature networks, the classifier score, degenerate-sample checks."""

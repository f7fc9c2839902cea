"""Training: losses, splits, the training loop, cross-validation and the fit entry point."""

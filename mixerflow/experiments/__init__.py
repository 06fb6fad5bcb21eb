"""Experiments: benchmarks of the training step, comparisons of trained models on the same
data and budget, and the GPU campaign that runs both."""

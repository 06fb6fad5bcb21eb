"""Invertible nflows ``Transform`` subclasses the image flows are built from (data -> noise):
preprocessing, reshapes, couplings, fused flow layers, row-wise and autoregressive flows."""

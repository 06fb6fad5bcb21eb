"""Tools on a trained model: sample grids, reconstructions, interpolations, embeddings and
linear probes."""

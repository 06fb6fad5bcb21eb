"""Image data: sources by name (the registry), splits, memory-mapped stores, batches."""

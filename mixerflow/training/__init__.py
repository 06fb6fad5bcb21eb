"""Training: the run config, the loop, the optimiser step, evaluation, checkpoints, torchrun,
stop signals and the run folder's lock and log."""

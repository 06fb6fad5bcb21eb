"""Bits/dim of a whole split: the same figure however the batches are shared among processes."""

import pytest

from mixerflow import load_config, load_splits
from mixerflow.models import build_model
from mixerflow.training import distributed
from mixerflow.training.evaluate import evaluate_bpd
from support import SMALL


def test_sharded_evaluation_sums_to_the_single_process_figure():
    """Each rank's share of batches, summed, is the whole split: the figure of one process."""
    cfg = load_config(None, SMALL)
    test = load_splits(cfg.data).test
    flow = build_model(cfg.model, (1, 8, 8), 17)
    whole = evaluate_bpd(flow, test, 50)

    class Rank(distributed.Distributed):
        shares: list = []

        def sum(self, values):
            Rank.shares.append(values)
            return values

    parts = [evaluate_bpd(flow, test, 50, world=Rank(rank=r, world_size=3)) for r in range(3)]
    count, total, _ = (sum(column) for column in zip(*Rank.shares, strict=True))
    assert count == len(test) and len({p[0] for p in parts}) == 3
    assert total / count == pytest.approx(whole[0], abs=1e-9)

"""Checkpoints written by an older version (tests/fixtures/checkpoints, made at ffe6bad
before the package was re-laid in layers) load, evaluate to the bits/dim they had then and
draw the same samples from the same seed."""

import json

import pytest
import torch

import mixerflow
from support import TESTS

FIXTURES = TESTS / "fixtures" / "checkpoints"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_old_checkpoint_evaluates_and_samples_as_it_did(name):
    expected = EXPECTED[name]
    flow = mixerflow.load_checkpoint(FIXTURES / f"{name}.pt")
    test = mixerflow.load_splits(flow.config.data).test
    bpd, _ = mixerflow.evaluate_bpd(flow, test, 500)
    assert abs(bpd - expected["test_bpd"]) <= 1e-5
    generator = torch.Generator().manual_seed(expected["sample_seed"])
    samples = flow.sample(len(expected["samples"]), expected["temperature"], generator=generator)
    assert torch.equal(samples, torch.tensor(expected["samples"], dtype=torch.uint8))

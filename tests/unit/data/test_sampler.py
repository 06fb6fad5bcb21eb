"""BatchSampler: seeded batches, and a stream that resumes where it stopped."""


import torch

from mixerflow.data.sampler import BatchSampler


def test_batch_sampler_is_seeded_and_resumes_its_stream():
    images = torch.arange(50, dtype=torch.uint8).reshape(50, 1, 1, 1)
    first, second = (BatchSampler(images, 8, torch.device("cpu"), seed=3) for _ in range(2))
    assert torch.equal(first(), second())
    state = first.state_dict()
    expected = first()
    second.load_state_dict(state)
    assert torch.equal(second(), expected)
    assert not torch.equal(BatchSampler(images, 8, torch.device("cpu"), seed=4)(), BatchSampler(
        images, 8, torch.device("cpu"), seed=3)())

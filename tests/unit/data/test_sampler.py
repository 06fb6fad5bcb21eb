"""BatchSampler: seeded batches, labels that belong to their images, and a stream that
resumes where it stopped."""


import torch

from mixerflow.data.sampler import BatchSampler


def test_batch_sampler_is_seeded_and_resumes_its_stream():
    images = torch.arange(50, dtype=torch.uint8).reshape(50, 1, 1, 1)
    first, second = (BatchSampler(images, 8, torch.device("cpu"), seed=3) for _ in range(2))
    assert torch.equal(first()[0], second()[0])
    state = first.state_dict()
    expected = first()[0]
    second.load_state_dict(state)
    assert torch.equal(second()[0], expected)
    assert not torch.equal(BatchSampler(images, 8, torch.device("cpu"), seed=4)()[0],
                           BatchSampler(images, 8, torch.device("cpu"), seed=3)()[0])


def test_labels_come_with_their_images_and_leave_the_stream_unchanged():
    images = torch.arange(50, dtype=torch.uint8).reshape(50, 1, 1, 1)
    labels = 1000 + torch.arange(50)  # each image's label tells its index
    plain, labelled = (BatchSampler(images, 8, torch.device("cpu"), seed=3, labels=given)
                       for given in (None, labels))
    (plain_images, none), (batch, batch_labels) = plain(), labelled()
    assert none is None and torch.equal(plain_images, batch)
    assert torch.equal(batch_labels, 1000 + batch.flatten().long())
    part = BatchSampler(images, 8, torch.device("cpu"), seed=3, part=(1, 2), labels=labels)()
    assert torch.equal(part[0], batch[4:]) and torch.equal(part[1], batch_labels[4:])

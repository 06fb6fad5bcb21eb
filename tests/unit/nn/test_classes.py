"""Class conditioning's pieces: the embedding of labels and the guided combination."""

import torch

from mixerflow.nn.classes import ClassEmbedding, Guided, guide, same_guidance, unguided


def test_guidance_pushes_both_halves_away_from_the_unconditional_output():
    conditional, unconditional = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 1.0]])
    outputs = torch.cat([conditional, unconditional])
    guided = guide(outputs, Guided(None, 3.0))
    expected = conditional + 3.0 * (conditional - unconditional)  # [[2.5, -11.0]]
    assert torch.equal(guided, torch.cat([expected, expected]))
    assert torch.equal(guide(outputs, Guided(None, 0.0))[1:], conditional)  # W = 0: conditional
    assert guide(outputs, torch.tensor([0, 1])) is outputs  # labels alone: no guidance


def test_the_embedding_reads_labels_inside_a_guided_context():
    embedding = ClassEmbedding(num_classes=3, features=4)
    assert embedding.table.shape == (4, 4)  # three classes and the no-class token
    labels = torch.tensor([2, 3])
    context = Guided(labels, 1.5)
    assert torch.equal(embedding(context), embedding(labels))
    assert torch.equal(embedding(labels)[1], embedding.table[3])
    assert unguided(context) is labels and unguided(labels) is labels
    derived = same_guidance("rows", context)
    assert derived == Guided("rows", 1.5) and same_guidance("rows", labels) == "rows"
    assert torch.equal(ClassEmbedding(3, 4, std=0.0).table, torch.zeros(4, 4))

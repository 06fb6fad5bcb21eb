"""The linear probe on embeddings of trained checkpoints."""



from mixerflow import load_checkpoint
from mixerflow.data.splits import load_splits
from mixerflow.tools.embedding import embed_splits
from mixerflow.tools.probe import probe


def test_a_probe_on_digits_embeddings_beats_chance_widely(checkpoints):
    flow = load_checkpoint(checkpoints["mixerflow"])
    arrays = embed_splits(flow, load_splits(flow.config.data), "block:2", "none")
    result = probe(arrays, c_grid=(0.1,))
    assert result["chance"] < 0.2
    assert result["test_accuracy"] > 0.7

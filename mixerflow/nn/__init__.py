"""Networks that need not be invertible: the coupling conditioners (MLP, KAN, conv), the
causal Transformer layers of the attention flow, and the precision they compute in."""

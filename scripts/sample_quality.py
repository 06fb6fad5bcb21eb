"""A diagnostic of sample quality: Fréchet distance in a small CNN classifier's features.

    python scripts/sample_quality.py --data-root ../shared/data CHECKPOINT [CHECKPOINT ...]

For the data set of the first checkpoint, a two-layer CNN is trained once on the training
split (2 epochs, about 1 minute on 2 CPU cores; test accuracy 0.98 on MNIST, 0.88 on
FashionMNIST) and cached at ``--classifier``. For every checkpoint and temperature it
draws ``--n`` samples (seed 0) and prints one JSON line: the Fréchet distance between the
CNN's 128 penultimate features of the samples and of 2,000 test images (lower is better),
the classifier's mean confidence and its class histogram, and the mean pixel value.
A first line scores ``--n`` real training images.

This is the FID recipe with a small in-domain classifier instead of Inception: a yardstick
for comparing runs measured side by side, not a number to compare across papers.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn

from mixerflow.cli.common import splits_of
from mixerflow.tools.sampling import draw_samples
from mixerflow.training.checkpoint import load_checkpoint


def classifier(channels: int, classes: int) -> nn.Sequential:
    """``(B, C, H, W)`` in [0, 1] -> logits ``(B, classes)``; ``[:-1]`` gives 128 features."""
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(64 * 49, 128),
        nn.ReLU(),
        nn.Linear(128, classes),
    )


def train_classifier(
    splits, classes: int, epochs: int = 2, batch_size: int = 128
) -> nn.Sequential:
    torch.manual_seed(0)
    model = classifier(splits.image_shape[0], classes)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    images = splits.train.images.float() / (splits.num_levels - 1)
    for _ in range(epochs):
        for idx in torch.randperm(len(images)).split(batch_size):
            loss = nn.functional.cross_entropy(model(images[idx]), splits.train.labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def features(model: nn.Sequential, images: torch.Tensor, num_levels: int):
    """Penultimate features ``(N, 128)`` (float64) and class probabilities ``(N, classes)``."""
    hidden = model[:-1](images.float() / (num_levels - 1))
    return hidden.double().numpy(), model[-1](hidden).softmax(dim=1).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and of ``b``."""
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data-root")
    parser.add_argument("--temperature", type=float, nargs="+", default=[0.7, 1.0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--classifier", help="cache (default runs/sample_quality_<data>.pt)")
    args = parser.parse_args()

    flows = {path: load_checkpoint(path) for path in args.checkpoints}
    data_cfg = flows[args.checkpoints[0]].config.data
    splits = splits_of(data_cfg, args)
    classes = int(splits.train.labels.max()) + 1
    cache = Path(args.classifier or f"runs/sample_quality_{data_cfg.name}.pt")
    if cache.exists():
        model = classifier(splits.image_shape[0], classes)
        model.load_state_dict(torch.load(cache))
        model.eval()
    else:
        model = train_classifier(splits, classes)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cache)
    reference, _ = features(model, splits.test.images[:2000], splits.num_levels)
    real, _ = features(model, splits.train.images[: args.n], splits.num_levels)
    print(
        json.dumps(
            {
                "checkpoint": "training images",
                "frechet": round(frechet_distance(reference, real), 1),
            }
        )
    )
    for path, flow in flows.items():
        for temperature in args.temperature:
            samples = draw_samples(flow, args.n, temperature, batch_size=500, seed=0)
            sampled, probs = features(model, samples, splits.num_levels)
            print(
                json.dumps(
                    {
                        "checkpoint": path,
                        "temperature": temperature,
                        "frechet": round(frechet_distance(reference, sampled), 1),
                        "confidence": round(float(probs.max(1).mean()), 3),
                        "classes": np.bincount(probs.argmax(1), minlength=probs.shape[1]).tolist(),
                        "mean_pixel": round(float(samples.float().mean()), 1),
                    }
                )
            )


if __name__ == "__main__":
    main()

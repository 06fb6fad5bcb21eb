"""A diagnostic of sample quality: Fréchet distance in a small CNN classifier's features.

    python scripts/sample_quality.py --data-root ../shared/data CHECKPOINT [CHECKPOINT ...]

For the data set of the first checkpoint, a two-layer CNN is trained once on the training
split (``--epochs``, default 2: about 1 minute on 2 CPU cores; test accuracy 0.98 on MNIST,
0.88 on FashionMNIST, 0.57 on CIFAR-10, where ``--epochs 8`` reaches 0.68) and cached at
``--classifier``. For every checkpoint and temperature it draws ``--n`` samples (seed 0)
and prints one JSON line: the Fréchet distance between the CNN's 128 penultimate features
of the samples and of 2,000 test images (lower is better), the classifier's mean
confidence and its class histogram, and the mean pixel value. A first line scores ``--n``
real training images and gives the classifier's accuracy on the whole test split.

A class-conditional checkpoint draws sample ``i`` of class ``i mod K`` at each ``--guidance``
(default 0, plain conditional) and adds the samples' class accuracy: the share the
classifier puts in the class they were drawn for. A checkpoint trained on noisy images
(``model.dequantization: gaussian``) is scored without and with ``--denoise``.

This is the FID recipe with a small in-domain classifier instead of Inception: a yardstick
for comparing runs measured side by side, not a number to compare across papers.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn

from mixerflow.cli.common import at_least, splits_of
from mixerflow.core.errors import UserError
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


def cached_classifier(cache: Path, splits, classes: int, epochs: int) -> nn.Sequential:
    """The classifier saved at ``cache``, or one trained for ``epochs`` and saved there.

    A cache trained for other epochs is refused rather than silently used.
    """
    if not cache.exists():
        model = train_classifier(splits, classes, epochs)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"epochs": epochs, "state": model.state_dict()}, cache)
        return model
    saved = torch.load(cache)
    saved_epochs = saved.get("epochs", 2)  # caches written before --epochs hold 2 epochs
    if saved_epochs != epochs:
        raise UserError(
            f"{cache} holds a classifier trained for {saved_epochs} epochs, not "
            f"{epochs}; pass --epochs {saved_epochs} or another --classifier path"
        )
    model = classifier(splits.image_shape[0], classes)
    model.load_state_dict(saved.get("state", saved))
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
    parser.add_argument("--epochs", type=int, default=2, help="classifier training epochs")
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.0],
                        help="class-conditional checkpoints: guidance weights to sample at")
    parser.add_argument(
        "--classifier", help="cache (default runs/sample_quality_<data>_<epochs>ep.pt)"
    )
    args = parser.parse_args()
    at_least(args, 1, "epochs", "n")

    flows = {path: load_checkpoint(path) for path in args.checkpoints}
    data_cfg = flows[args.checkpoints[0]].config.data
    splits = splits_of(data_cfg, args)
    classes = int(splits.train.labels.max()) + 1
    default_cache = f"runs/sample_quality_{data_cfg.name}_{args.epochs}ep.pt"
    model = cached_classifier(Path(args.classifier or default_cache), splits, classes, args.epochs)
    test_features, test_probs = features(model, splits.test.images, splits.num_levels)
    reference = test_features[:2000]
    accuracy = (test_probs.argmax(1) == splits.test.labels.numpy()).mean()
    real, _ = features(model, splits.train.images[: args.n], splits.num_levels)
    print(
        json.dumps(
            {
                "checkpoint": "training images",
                "frechet": round(frechet_distance(reference, real), 1),
                "classifier_epochs": args.epochs,
                "classifier_test_accuracy": round(float(accuracy), 4),
            }
        )
    )
    for path, flow in flows.items():
        for temperature, guidance, denoise in settings(flow, args):
            labels = torch.arange(args.n) % flow.num_classes if flow.num_classes else None
            samples = draw_samples(flow, args.n, temperature, batch_size=500, seed=0,
                                   labels=labels, guidance=guidance, denoise=denoise)
            sampled, probs = features(model, samples, splits.num_levels)
            line = {
                "checkpoint": path,
                "temperature": temperature,
                "frechet": round(frechet_distance(reference, sampled), 1),
                "confidence": round(float(probs.max(1).mean()), 3),
                "classes": np.bincount(probs.argmax(1), minlength=probs.shape[1]).tolist(),
                "mean_pixel": round(float(samples.float().mean()), 1),
            }
            if labels is not None:
                line |= {"guidance": guidance, "class_accuracy": round(float(
                    (probs.argmax(1) == labels.numpy()).mean()), 4)}
            if flow.noise_std:
                line["denoised"] = denoise
            print(json.dumps(line), flush=True)


def settings(flow, args: argparse.Namespace) -> list[tuple[float, float | None, bool]]:
    """``(temperature, guidance, denoise)`` of each scoring of ``flow``: guidance only for a
    class-conditional flow, denoising both ways for a noisy-image flow."""
    guidances = args.guidance if flow.num_classes else [None]
    denoising = [False, True] if flow.noise_std else [False]
    return [(t, g, d) for t in args.temperature for g in guidances for d in denoising]


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

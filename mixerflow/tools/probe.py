"""Linear probes on embeddings: a scikit-learn logistic regression on standardised features,
its regularisation chosen on the validation split."""

import warnings

import numpy as np

C_GRID = (0.001, 0.01, 0.1, 1.0)  # inverse regularisation strengths tried on validation



def probe(arrays: dict[str, np.ndarray], c_grid: tuple[float, ...] = C_GRID,
          max_iter: int = 300) -> dict:
    """Logistic regression on standardised features; C picked by validation accuracy.

    Returns train/val/test accuracy, the chosen C and the chance level (majority class).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(c: float):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
        with warnings.catch_warnings():  # a capped lbfgs is fine for a probe
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(arrays["train_x"], arrays["train_y"])

    def accuracy(model, split: str) -> float:
        return float(model.score(arrays[f"{split}_x"], arrays[f"{split}_y"]))

    scored = [(accuracy(model, "val"), c, model) for c in c_grid for model in [fit(c)]]
    val_accuracy, best_c, best = max(scored, key=lambda item: item[0])
    counts = np.bincount(arrays["test_y"])
    return {
        "C": best_c, "train_accuracy": accuracy(best, "train"), "val_accuracy": val_accuracy,
        "test_accuracy": accuracy(best, "test"), "chance": float(counts.max() / counts.sum()),
        "features": int(arrays["train_x"].shape[1]), "train_size": int(len(arrays["train_y"])),
    }

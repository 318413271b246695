"""Linear probes of frozen features (CLIP, Sec. 3.2 and Appendix A.3): a logistic regression
(L-BFGS, scikit-learn) fitted on training features, scored on held-out ones."""

from __future__ import annotations

import torch


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    c: float = 1.0,
) -> float:
    """Test accuracy of an L2-regularised (inverse strength `c`) logistic regression on
    standardised features; the network that made them is not touched."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    probe.fit(train_features.float().cpu().numpy(), train_labels.cpu().numpy())
    return float(probe.score(test_features.float().cpu().numpy(), test_labels.cpu().numpy()))

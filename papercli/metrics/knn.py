"""Weighted k-nearest-neighbour classification of frozen features (Wu et al., 2018), the protocol
DINO evaluates with (Caron et al., 2021, Sec. 4.1 / Table 2: k = 20, T = 0.07): features are
ℓ2-normalised, each of a query's k most cosine-similar training samples votes for its label with
weight exp(similarity / T), and the label with the most weight wins."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def weighted_knn(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1000,
) -> torch.Tensor:
    """Predicted labels (N_test,) for the test features, the training set as the memory bank."""
    memory = F.normalize(train_features.float(), dim=1)
    k = min(k, len(memory))
    predictions = []
    for start in range(0, len(test_features), chunk):
        queries = F.normalize(test_features[start : start + chunk].float(), dim=1)
        similarity, index = (queries @ memory.T).topk(k, dim=1)
        votes = torch.zeros(len(queries), num_classes, device=queries.device)
        votes.scatter_add_(1, train_labels[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)

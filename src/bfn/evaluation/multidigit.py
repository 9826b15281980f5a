"""A two-digit recogniser for the 64x64 multi-digit canvases, trained offline by bfn like the MNIST classifier.

`TwoDigitCNN` reads a canvas [1, 64, 64] in [0, 1] with four 3x3 conv blocks (64 -> 32 -> 16 -> 8 -> 4), a
128-unit feature layer and two 10-way heads, one for the left digit and one for the right; the 100 logits of
the number 10 * left + right are log p(left) + log p(right) (the heads are trained jointly by the cross-entropy
over the 100 numbers, which is the sum of the two digits' cross-entropies). It is trained with the machinery of
`bfn.evaluation.classifier` (same optimiser, jitter, grey/binarized mix, cache, atomic writes) on canvases
composed from the embedded MNIST training digits, and tested on canvases of the held-out test digits, so the
test accuracy is the ceiling a perfect generator would reach. Its 128-d features feed `sample_quality`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.evaluation.classifier import Recipe

#: bump when the architecture or the training recipe changes: cached weights of another version are retrained
RECIPE_VERSION = "1"
CACHE_NAME = "two_digit_cnn.safetensors"
TRAIN_CANVASES = 8_000
TEST_CANVASES = 2_000


class PairHead(nn.Module):
    """Features [N, F] -> logits [N, 100] of the number 10 * left + right: log p(left) + log p(right)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, 20)

    def forward(self, f: Tensor) -> Tensor:
        left, right = self.linear(f).reshape(-1, 2, 10).log_softmax(-1).unbind(1)  # 2 x (N, 10)
        return (left[:, :, None] + right[:, None, :]).reshape(-1, 100)  # (N, 100), index 10 * left + right


class TwoDigitCNN(nn.Module):
    """Grey (or binary) 64x64 two-digit canvases in [0, 1] -> 100 logits; `features` gives the 128-d layer."""

    num_features = 128
    image_shape = (1, 64, 64)
    num_classes = 100

    def __init__(self, width: int = 8) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.body = nn.Sequential(block(1, width), block(width, 2 * width), block(2 * width, 4 * width),
                                  block(4 * width, 4 * width))  # 64 -> 32 -> 16 -> 8 -> 4
        self.fc = nn.Linear(4 * width * 4 * 4, self.num_features)
        self.dropout = nn.Dropout(0.3)
        self.head = PairHead(self.num_features)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations [N, 128] of canvases [N, 1, 64, 64] in [0, 1]."""
        return F.relu(self.fc(self.body(x).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))


def canvas_split(split: str) -> tuple[Tensor, Tensor]:
    """Grey canvases [N, 1, 64, 64] in [0, 1] and numbers [N] (0..99) of the multi-digit data set's `split`: the
    training canvases are composed from the embedded training digits, the test ones from the held-out digits
    (layout seed 0, as `multidigit-binarized` uses by default; 2,000 test canvases as its test split)."""
    from bfn.data.mnist import mnist_5k_split
    from bfn.data.multi_mnist import MultiDigit

    images, labels = mnist_5k_split(split)
    data = MultiDigit(images, labels, TRAIN_CANVASES if split == "train" else TEST_CANVASES, seed=0)
    x = torch.stack([data.canvas(i) for i in range(len(data))]).float().div(255)
    y = torch.tensor([data.label(i) for i in range(len(data))])
    return x, y


TWO_DIGIT = Recipe("two-digit", TwoDigitCNN, RECIPE_VERSION, CACHE_NAME, canvas_split, epochs=5)

#!/usr/bin/env python3
"""Writes the scikit-learn digits (the copy the python3-sklearn package ships, no download) as
one .npz dataset file: images (N x 8 x 8, values 0-16), labels, and test_mask (a fixed fifth of
the samples, held out for evaluation). Upload the file to your store; jobs get it through
DATASETS. Usage: export_digits.py OUTPUT.npz
"""

import sys

import numpy as np
from sklearn.datasets import load_digits

if len(sys.argv) != 2:
    sys.exit("usage: export_digits.py OUTPUT.npz")

digits = load_digits()
held_out = np.random.default_rng(7).permutation(len(digits.target))[: len(digits.target) // 5]
test_mask = np.zeros(len(digits.target), dtype=bool)
test_mask[held_out] = True
with open(sys.argv[1], "wb") as output:
    np.savez(output, images=digits.images.astype(np.uint8), labels=digits.target.astype(np.int64), test_mask=test_mask)
print(f"{len(digits.target)} digits written to {sys.argv[1]} ({int(test_mask.sum())} held out for evaluation)")

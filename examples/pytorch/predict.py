#!/usr/bin/env python3
"""Batch inference with the model examples/pytorch/train.py trains: predicts the label of every
image in a digits .npz (as export_digits.py writes it) and writes the predictions, with the
accuracy where the file has labels, as JSON.

Usage: predict.py MODEL.pt DIGITS.npz OUTPUT_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from train import DEVICE, DigitsNet

if len(sys.argv) != 4:
    sys.exit("usage: predict.py MODEL.pt DIGITS.npz OUTPUT_DIR")
model_file, digits_file, output_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])

model = DigitsNet().to(DEVICE)
model.load_state_dict(torch.load(model_file, map_location=DEVICE))
model.eval()
with np.load(digits_file) as data:
    images = torch.tensor(data["images"], dtype=torch.float32).unsqueeze(1) / 16.0
    labels = data["labels"] if "labels" in data else None
with torch.no_grad():
    predicted = torch.cat([model(batch.to(DEVICE)).argmax(dim=1).cpu() for batch in images.split(512)]).numpy()

output_dir.mkdir(parents=True, exist_ok=True)
result = {"count": int(len(predicted)), "labels": predicted.tolist()}
if labels is not None:
    result["accuracy"] = float((predicted == labels).mean())
(output_dir / "predictions.json").write_text(json.dumps(result) + "\n")
print(f"{len(predicted)} predictions written to {output_dir / 'predictions.json'}"
      + (f", accuracy {result['accuracy']:.4f}" if labels is not None else ""))

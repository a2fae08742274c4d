#!/usr/bin/env python3
"""A small inference server for the model examples/pytorch/train.py trains: standard library
HTTP, torch for the model. The package-serving-image component puts it, train.py (for the
model's class) and model.pt into an image.

  GET  /health             200 "ok" once the model is loaded
  POST /predict            {"images": [[64 pixel values 0-16], ...]} -> {"labels": [...]}

Environment: MODEL_FILE (/srv/model/model.pt), PORT (8080).
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from train import DigitsNet

MODEL_FILE = os.environ.get("MODEL_FILE", "/srv/model/model.pt")
PORT = int(os.environ.get("PORT", "8080"))
MAX_IMAGES = 4096

model = DigitsNet()
model.load_state_dict(torch.load(MODEL_FILE, map_location="cpu"))
model.eval()


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self.reply(200, "ok")
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/predict":
            self.reply(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            images = json.loads(self.rfile.read(min(length, 64 * MAX_IMAGES * 8)))["images"]
            if not 0 < len(images) <= MAX_IMAGES or any(len(image) != 64 for image in images):
                raise ValueError(f"images must be 1 to {MAX_IMAGES} lists of 64 pixel values")
            batch = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        except (ValueError, KeyError, TypeError) as error:
            self.reply(400, {"error": str(error)})
            return
        with torch.no_grad():
            labels = model(batch).argmax(dim=1).tolist()
        self.reply(200, {"labels": labels})


if __name__ == "__main__":
    print(f"serving {MODEL_FILE} on port {PORT}", flush=True)
    ThreadingHTTPServer(("", PORT), Handler).serve_forever()

#!/usr/bin/env python3
"""The reference PyTorch trainer: a trainer written the way gpu-executor asks users to write one.

A small CNN learns the scikit-learn digits (8x8 images, 10 classes) from the job's dataset: the
file DIGITS_FILE (default /data/digits/digits.npz) that `export_digits.py` writes and the job's
DATASETS line brings in. Its training is seeded and deterministic on CPU, with shuffled batches,
random augmentations (shifts and noise) and dropout, so that a run cut off at any batch boundary
and resumed reaches the same weights, bit for bit, as one that never stopped.

What it does for that, and what a trainer of yours should do too:
  - Checkpoint everything the next batch depends on: the model, the optimizer, the LR
    scheduler, the epoch and the batch within it, and every random state (Python's, NumPy's,
    torch's, and the sampler's own generator as it was when the epoch drew its order).
  - Write a checkpoint to a temporary name, rename it into place, then create
    $CHECKPOINT_MARKER: the executor commits only checkpoints the marker says are complete.
  - On the stop signal (SIGTERM, or the runner's run.stop_signal: SIGINT and SIGUSR1 too), finish
    the batch in hand, save, and exit 143. Never save from inside the signal handler.
  - On start, resume from $CHECKPOINT_DIR if a checkpoint is there.
  - Where the executor tracks runs in GitLab's MLflow, log to the run it names (class Tracking).

Environment (all optional): EPOCHS (8), BATCH_SIZE (32), LEARNING_RATE (0.02: AdamW under a one-cycle schedule), SEED (20261201),
CHECKPOINT_EVERY_SECONDS (30), BATCH_SLEEP_SECONDS (0: slows each batch down, for demos and tests
that must cut a run off mid-epoch), MODEL_DIR ($CI_PROJECT_DIR/model), TORCH_THREADS (1: the
thread count changes how sums are split, so a run and its resumption must use the same one).
Standard library, NumPy and torch only.
"""

import hashlib
import json
import os
import random
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch import nn


def env_int(name, default):
    return int(os.environ.get(name, default))


def env_float(name, default):
    return float(os.environ.get(name, default))


EPOCHS = env_int("EPOCHS", 8)
BATCH_SIZE = env_int("BATCH_SIZE", 32)
LEARNING_RATE = env_float("LEARNING_RATE", 0.02)
SEED = env_int("SEED", 20261201)
CHECKPOINT_EVERY_SECONDS = env_float("CHECKPOINT_EVERY_SECONDS", 30)
BATCH_SLEEP_SECONDS = env_float("BATCH_SLEEP_SECONDS", 0)
DIGITS_FILE = Path(os.environ.get("DIGITS_FILE", "/data/digits/digits.npz"))
MODEL_DIR = Path(os.environ.get("MODEL_DIR", Path(os.environ.get("CI_PROJECT_DIR", ".")) / "model"))
CHECKPOINT_DIR = os.environ.get("CHECKPOINT_DIR")
CHECKPOINT_MARKER = os.environ.get("CHECKPOINT_MARKER")

torch.set_num_threads(env_int("TORCH_THREADS", 1))
# On a GPU, deterministic cuBLAS needs this set before its first use.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
torch.use_deterministic_algorithms(True)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

stop_requested = False


def request_stop(signum, _frame):
    # Only a flag: the save happens at the next batch boundary, where the state is whole.
    global stop_requested
    stop_requested = True
    print(f"signal {signal.Signals(signum).name}: saving at the end of this batch", flush=True)



class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10),
        )

    def forward(self, images):
        return self.classifier(self.features(images))


class Tracking:
    """Logs metrics to the MLflow run gpu-executor gave the job (MLFLOW_TRACKING_URI, MLFLOW_RUN_ID,
    with the job's MLFLOW_TRACKING_TOKEN), through MLflow's REST API and the standard library only:
    Debian does not package the mlflow client. With the client it is one line per metric:
        mlflow.start_run()  # continues MLFLOW_RUN_ID
        mlflow.log_metric("loss", loss, step=step)
    A resumed segment logs only steps past the last one the run already has for each metric, so
    every metric arrives in step order across segments. Tracking that fails never stops training."""

    def __init__(self):
        self.uri = os.environ.get("MLFLOW_TRACKING_URI", "").rstrip("/")
        self.run_id = os.environ.get("MLFLOW_RUN_ID", "")
        self.token = os.environ.get("MLFLOW_TRACKING_TOKEN", "")
        self.enabled = bool(self.uri and self.run_id)
        self.last_step = {}
        if self.enabled:
            answer = self.call("GET", "runs/get?run_id=" + urllib.parse.quote(self.run_id))
            for metric in (answer or {}).get("run", {}).get("data", {}).get("metrics", []):
                self.last_step[metric["key"]] = max(self.last_step.get(metric["key"], -1), int(metric.get("step", 0)))

    def call(self, method, endpoint, body=None):
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.uri}/api/2.0/mlflow/{endpoint}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError) as error:
            print(f"mlflow: {endpoint.split('?')[0]} failed ({error}); training goes on", flush=True)
            return None

    def log(self, step, **metrics):
        fresh = {key: value for key, value in metrics.items() if step > self.last_step.get(key, -1)}
        if not self.enabled or not fresh:
            return
        now = int(time.time() * 1000)
        batch = [{"key": key, "value": float(value), "timestamp": now, "step": step} for key, value in fresh.items()]
        if self.call("POST", "runs/log-batch", {"run_id": self.run_id, "metrics": batch}) is not None:
            self.last_step.update({key: step for key in fresh})

    def finish(self):
        if self.enabled:
            self.call("POST", "runs/update", {"run_id": self.run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)})


def load_digits_file():
    """The dataset as the executor mounted it: read-only, whole, verified."""
    if not DIGITS_FILE.is_file():
        sys.exit(f"no dataset at {DIGITS_FILE}: add it to DATASETS (see examples/pytorch/README.md)")
    with np.load(DIGITS_FILE) as data:
        images = torch.tensor(data["images"], dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(data["labels"], dtype=torch.long)
        test_mask = torch.tensor(data["test_mask"], dtype=torch.bool)
    return (images[~test_mask], labels[~test_mask]), (images[test_mask], labels[test_mask])


def augment(images):
    """Random shifts by a pixel (torch's RNG) and pixel noise (NumPy's), as real augmentations draw."""
    shifts = torch.randint(-1, 2, (2,)).tolist()
    shifted = torch.roll(images, shifts=shifts, dims=(2, 3))
    noise = torch.from_numpy(np.random.normal(0.0, 0.05, size=tuple(images.shape)).astype(np.float32))
    return shifted + noise


def state_dict_sha256(model):
    """One hash of every weight's bytes, in key order: equal hashes mean equal weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def accuracy_of(model, images, labels):
    model.eval()
    with torch.no_grad():
        predicted = model(images.to(DEVICE)).argmax(dim=1).cpu()
    model.train()
    return (predicted == labels).float().mean().item()


def save_checkpoint(state):
    path = Path(CHECKPOINT_DIR) / "state.pt"
    temporary = path.with_suffix(".pt.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)
    # The marker last: "this checkpoint is complete".
    Path(CHECKPOINT_MARKER).touch()


def main():
    for stop_signal in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(stop_signal, request_stop)
    (train_images, train_labels), (test_images, test_labels) = load_digits_file()
    batches_per_epoch = (len(train_labels) + BATCH_SIZE - 1) // BATCH_SIZE

    random.seed(SEED)
    np.random.seed(SEED % 2**32)
    torch.manual_seed(SEED)
    sampler = torch.Generator().manual_seed(SEED + 1)
    model = DigitsNet().to(DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LEARNING_RATE, total_steps=EPOCHS * batches_per_epoch)
    loss_of = nn.CrossEntropyLoss()

    epoch, batch, epoch_order_state = 0, 0, None
    checkpoint = Path(CHECKPOINT_DIR) / "state.pt" if CHECKPOINT_DIR else None
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=DEVICE)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, batch = state["epoch"], state["batch"]
        epoch_order_state = None if state["sampler_at_epoch_start"] is None else state["sampler_at_epoch_start"].cpu()
        random.setstate(state["python_random"])
        np.random.set_state(state["numpy_random"])
        torch.set_rng_state(state["torch_random"].cpu())
        if DEVICE.type == "cuda":
            torch.cuda.set_rng_state_all([generator.cpu() for generator in state["cuda_random"]])
        sampler.set_state(state["sampler"].cpu())
        print(f"resumed at epoch {epoch} batch {batch} (step {epoch * batches_per_epoch + batch}, "
              f"generation {os.environ.get('CHECKPOINT_RESTORED_GENERATION', 'none')})", flush=True)
    else:
        print(f"starting from scratch on {DEVICE}", flush=True)

    def state_now(at_epoch, at_batch, order_state):
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": at_epoch, "batch": at_batch, "sampler_at_epoch_start": order_state,
            "python_random": random.getstate(), "numpy_random": np.random.get_state(),
            "torch_random": torch.get_rng_state(), "sampler": sampler.get_state(),
            "cuda_random": torch.cuda.get_rng_state_all() if DEVICE.type == "cuda" else [],
        }

    tracking = Tracking()
    last_save = time.monotonic()
    while epoch < EPOCHS:
        # The epoch's order comes from the sampler's generator; a resumed epoch draws it again
        # from the state the generator had when the epoch began, then skips the batches done.
        if batch > 0 and epoch_order_state is not None:
            sampler.set_state(epoch_order_state)
        epoch_order_state = sampler.get_state()
        order = torch.randperm(len(train_labels), generator=sampler)
        epoch_loss = 0.0
        epoch_started = time.monotonic()
        while batch < batches_per_epoch:
            indices = order[batch * BATCH_SIZE:(batch + 1) * BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_of(model(augment(train_images[indices]).to(DEVICE)), train_labels[indices].to(DEVICE))
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_loss += loss.item()
            batch += 1
            step = epoch * batches_per_epoch + batch
            print(f"step {step} epoch {epoch} batch {batch} loss {loss.item():.4f}", flush=True)
            tracking.log(step, loss=loss.item(), learning_rate=scheduler.get_last_lr()[0])
            if BATCH_SLEEP_SECONDS > 0:
                time.sleep(BATCH_SLEEP_SECONDS)
            at_end = batch == batches_per_epoch
            position = (epoch + 1, 0, None) if at_end else (epoch, batch, epoch_order_state)
            if CHECKPOINT_DIR and (stop_requested or time.monotonic() - last_save >= CHECKPOINT_EVERY_SECONDS):
                save_checkpoint(state_now(*position))
                last_save = time.monotonic()
                print(f"checkpoint at step {step} (epoch {position[0]} batch {position[1]})", flush=True)
            # At the epoch's last batch the evaluation comes first: the next segment starts at the
            # next epoch and would never report this one.
            if stop_requested and not at_end:
                print(f"stopped: checkpoint saved at step {step}, exiting", flush=True)
                sys.exit(143)
        accuracy = accuracy_of(model, test_images, test_labels)
        print(f"epoch {epoch} done: loss {epoch_loss / batches_per_epoch:.4f} accuracy {accuracy:.4f} ({time.monotonic() - epoch_started:.3f} s)", flush=True)
        tracking.log((epoch + 1) * batches_per_epoch, accuracy=accuracy)
        if stop_requested:
            # The signal may have come during the evaluation, after the last batch's save.
            if CHECKPOINT_DIR:
                save_checkpoint(state_now(epoch + 1, 0, None))
            print(f"stopped: checkpoint saved at step {(epoch + 1) * batches_per_epoch}, exiting", flush=True)
            sys.exit(143)
        epoch, batch = epoch + 1, 0

    accuracy = accuracy_of(model, test_images, test_labels)
    digest = state_dict_sha256(model)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), MODEL_DIR / "model.pt")
    (MODEL_DIR / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "state_dict_sha256": digest, "epochs": EPOCHS}) + "\n")
    if CHECKPOINT_DIR:
        save_checkpoint(state_now(EPOCHS, 0, None))
    tracking.finish()
    print(f"training complete: accuracy {accuracy:.4f}, state_dict sha256 {digest}", flush=True)


if __name__ == "__main__":
    main()

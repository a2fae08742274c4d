"""Wait for the files of a dataset that gpu-executor streams (DATASETS line with mode=stream).

A streamed view starts with its first objects and receives the rest while the job runs. Each
file appears only whole and verified (a hard link made in one step), so a file that exists can
be read at once. The view's index, .gpu-executor-index.json, lists every object with its size
and whether it is ready, and says when the stream has failed and on which object.

    from stream_wait import wait_for
    with open(wait_for("/data/corpus/shard-00017.tar"), "rb") as shard:
        ...

With PyTorch, call wait_for in an IterableDataset's __iter__ before opening each shard, in the
order the shards are read (the fetcher brings them in listing order, so read them in that
order). With WebDataset, map the shard URLs through wait_for first, or use "pipe:" URLs that
run a small script calling it. Each wait is added to the file that $GPU_EXECUTOR_DATASET_WAITS
names, and the job log reports the total at the end of the job.

Only the standard library is used.
"""
import json
import os
import time

INDEX = ".gpu-executor-index.json"


class StreamFailed(RuntimeError):
    """The stream stopped: the object will not come. The message names the object and why."""


def _index_of(path):
    """The index of the streamed view that holds path: the nearest one up the tree."""
    directory = os.path.dirname(os.path.abspath(path))
    while True:
        candidate = os.path.join(directory, INDEX)
        if os.path.exists(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _read_index(index):
    # The index is replaced whole (renamed into place), so a read sees one version or the next.
    with open(index, "rb") as handle:
        return json.load(handle)


def wait_for(path, timeout=None, poll=0.1, on_wait=None):
    """Returns path once its file is there, whole. Raises StreamFailed if the stream failed, and
    TimeoutError after timeout seconds (None: wait as long as the stream goes on). on_wait, if
    given, is called with path once, when the file is found missing and the wait begins."""
    started = time.monotonic()
    index = _index_of(path)
    announced = False
    try:
        while not os.path.exists(path):
            if index is None:
                raise FileNotFoundError(f"{path} does not exist and is not in a streamed dataset")
            state = _read_index(index)
            if state.get("failed"):
                raise StreamFailed(f"{path} will not arrive: {state['failed']}")
            if state.get("complete"):
                raise FileNotFoundError(f"{path} is not part of the dataset: the stream is complete without it")
            if timeout is not None and time.monotonic() - started > timeout:
                raise TimeoutError(f"{path} did not arrive within {timeout} s")
            if on_wait is not None and not announced:
                announced = True
                on_wait(path)
            time.sleep(poll)
        return path
    finally:
        _record_wait(path, time.monotonic() - started)


def _record_wait(path, seconds):
    waits = os.environ.get("GPU_EXECUTOR_DATASET_WAITS")
    if not waits or seconds < 0.001:
        return
    try:
        with open(waits, "a", encoding="utf-8") as handle:
            handle.write(f"{seconds:.3f} {path}\n")
    except OSError:
        pass  # The total in the job log is a report; the training goes on without it.


if __name__ == "__main__":
    import sys

    def announce(name):
        print(f"waiting for {name}", file=sys.stderr, flush=True)

    for name in sys.argv[1:]:
        print(wait_for(name, on_wait=announce))

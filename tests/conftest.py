"""Test-suite settings: tiny models run fastest on one thread, and a busy machine makes thread pools crawl."""
import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the CLI / torchrun subprocesses the tests start
torch.set_num_threads(1)

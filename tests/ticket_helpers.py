"""A tiny model and a hand-written training loop, as a user of ``find_tickets`` would write them."""
import torch
import torch.nn.functional as F
from torch import nn

import lottery as lt


def make_data(n=256, d=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, classes, generator=g)
    return x, (x @ w).argmax(1)


class Net(nn.Module):
    def __init__(self, d=12, hidden=16, classes=3):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    return Net(**kw)


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


class Loop:
    """``train_fn``: Adam for ``steps`` steps, masked gradients; records every call (level, arm, start weights)."""

    def __init__(self, steps=30, rewind_at=None):
        self.steps, self.rewind_at, self.calls = steps, rewind_at, []
        self.x, self.y = make_data()

    def __call__(self, model, mask, run):
        self.calls.append({"level": run.level, "arm": run.arm, "state": lt.snapshot(model), "mask": mask.clone()})
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(run.seed)
        curve = []
        for step in range(self.steps):
            if step == self.rewind_at:
                run.save_rewind_state(model)
            idx = torch.randint(0, len(self.x), (32,), generator=g)
            loss = F.cross_entropy(model(self.x[idx]), self.y[idx])
            opt.zero_grad()
            loss.backward()
            lt.mask_gradients(model, mask)
            opt.step()
            if step % 10 == 0:
                curve.append([step, loss.item(), accuracy(model, self.x, self.y)])
                run.log(step, train_loss=loss.item())
        return {"test_accuracy": accuracy(model, self.x, self.y), "early_stop_step": self.steps, "curve": curve,
                "final_loss": loss.item()}


def run_logged(out, log_path, levels=2):
    """find_tickets in a fresh process (the crash tests' target); every train_fn call appends 'level arm' to a file."""
    loop = Loop()

    def train_fn(model, mask, run):
        with open(log_path, "a") as f:
            f.write(f"{run.level} {run.arm}\n")
        return loop(model, mask, run)

    lt.find_tickets(make_model(), train_fn, out=out, levels=levels, progress=False)

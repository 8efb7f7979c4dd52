"""The Lightning and Hugging Face callbacks under find_tickets, with the real libraries on tiny models (no download).

Each test records what every ``train_fn`` call received (the rewind invariant: survivors equal the init bit for
bit, pruned weights +0.0) and what the framework's optimizer held after training (pruned weights and their Adam
moments exactly zero), and checks that the recorded accuracy is the trained ticket's, not a rewound network's.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lottery as lt
from lottery.storage.rundir import RunDir
from lottery.drivers.find_tickets import TrainFnError
from tests.ticket_helpers import accuracy, make_data

pytestmark = pytest.mark.slow  # Lightning and Transformers: seconds of imports and a Trainer each


def _pruned_state_is_zero(model, mask, optimizer) -> bool:
    state = getattr(optimizer, "optimizer", optimizer).state  # Accelerate wraps the Trainer's optimizer
    for name, p in model.named_parameters():
        if name in mask:
            off = ~mask[name].to(p.device)
            moments = [state[p][k][off] for k in ("exp_avg", "exp_avg_sq")]
            if torch.count_nonzero(p.detach()[off]) or any(torch.count_nonzero(m) for m in moments):
                return False
    return True


def _check_rewinds(calls, run_dir):
    run = RunDir(run_dir)
    init = run.load_state("init.pt")
    for call in calls:
        if call["arm"] != "ticket":
            continue
        mask = run.load_mask(call["level"])
        for name, value in call["state"].items():
            expected = torch.where(mask[name], init[name], 0.0) if name in mask else init[name]
            assert torch.equal(value, expected), (call["level"], name)


# -- PyTorch Lightning ------------------------------------------------------------------------------------------
def test_lightning_callback(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from lottery.integrations.lightning import LotteryCallback

    class LitNet(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 3)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    x, y = make_data()
    calls = []

    def train_fn(model, mask, run, callback=True):
        calls.append({"level": run.level, "arm": run.arm, "state": lt.snapshot(model)})
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True,
                                             generator=torch.Generator().manual_seed(run.seed))
        trainer = pl.Trainer(max_steps=12, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                             callbacks=[LotteryCallback(mask)] if callback else [])
        trainer.fit(model, loader)
        calls[-1]["zero"] = _pruned_state_is_zero(model, mask, trainer.optimizers[0])
        return {"test_accuracy": accuracy(model, x, y)}

    torch.manual_seed(0)
    results = lt.find_tickets(LitNet(), train_fn, out=str(tmp_path / "runs"), levels=2, progress=False)
    assert len(calls) == 7 and all(c["zero"] for c in calls)
    _check_rewinds(calls, results["run_dir"])
    model = LitNet()  # the recorded accuracy is the trained ticket's (level_NN/final.pt), not the rewound one's
    for e in results["levels"]:
        model.load_state_dict(RunDir(results["run_dir"]).load_state(f"level_{e['level']:02d}/final.pt"))
        assert accuracy(model, x, y) == e["test_accuracy"]
    torch.manual_seed(0)
    with pytest.raises(TrainFnError, match="pruned weights of 'fc1.weight' non-zero"):  # without the callback
        lt.find_tickets(LitNet(), lambda m, k, r: train_fn(m, k, r, callback=False), out=str(tmp_path / "bare"),
                        levels=1, progress=False)


# -- Hugging Face Trainer ---------------------------------------------------------------------------------------
def test_huggingface_callback(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from lottery.integrations.huggingface import LotteryCallback

    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 40, (64, 8), generator=g)
    labels = (ids[:, 0] < 20).long()  # the class is in the first token

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            return {"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": labels[i]}

    def accuracy_of(model):
        model.eval()
        with torch.no_grad():
            return float((model(input_ids=ids).logits.argmax(1) == labels).float().mean())

    calls = []

    def train_fn(model, mask, run):
        calls.append({"level": run.level, "arm": run.arm, "state": lt.snapshot(model)})
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / "hf"), max_steps=6, per_device_train_batch_size=16, learning_rate=5e-3,
            report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=run.seed)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(),
                                       callbacks=[LotteryCallback(mask)])
        trainer.train()
        calls[-1]["zero"] = _pruned_state_is_zero(model, mask, trainer.optimizer)
        return {"test_accuracy": accuracy_of(model)}

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    results = lt.find_tickets(model, train_fn, out=str(tmp_path / "runs"), levels=2, progress=False)
    assert results["status"] == "complete" and len(calls) == 7 and all(c["zero"] for c in calls)
    assert "classifier.weight" in results["config"]["prunable"]
    assert not any("embeddings" in n for n in results["config"]["prunable"])
    _check_rewinds(calls, results["run_dir"])
    for e in results["levels"]:  # recorded before rewinding: the trained ticket's accuracy
        model.load_state_dict(RunDir(results["run_dir"]).load_state(f"level_{e['level']:02d}/final.pt"))
        assert accuracy_of(model) == e["test_accuracy"]

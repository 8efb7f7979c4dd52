"""find_tickets around a Hugging Face ``Trainer`` on transformers built from configs (no download): a ViT and a
GPT-2, each with its prunable weights chosen by ``include=`` (the projections and MLP weights, not embeddings)."""
import pytest
import torch

import lottery as lt

pytestmark = pytest.mark.slow  # transformers' import and a Trainer per training run


def gpt2_draw(model, seed):
    """The reinit control for GPT-2, whose Conv1D layers lack reset_parameters: its own N(0, 0.02)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def find_with_trainer(tmp_path, model, batches, include, reinit=None):
    transformers = pytest.importorskip("transformers")
    from lottery.integrations.huggingface import LotteryCallback

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(batches["labels"])

        def __getitem__(self, i):
            return {k: v[i] for k, v in batches.items()}

    def accuracy(model):
        model.eval()
        inputs = {k: v for k, v in batches.items() if k != "labels"}
        with torch.no_grad():
            return float((model(**inputs).logits.argmax(1) == batches["labels"]).float().mean())

    def train_fn(model, mask, run):
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / "hf"), max_steps=4, per_device_train_batch_size=16, learning_rate=5e-3,
            report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=run.seed)
        transformers.Trainer(model=model, args=args, train_dataset=Rows(), callbacks=[LotteryCallback(mask)]).train()
        return {"test_accuracy": accuracy(model)}

    return lt.find_tickets(model, train_fn, out=str(tmp_path / "runs"), levels=1, include=include,
                           reinit=reinit, progress=False)


def test_vit_from_a_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=2)
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config)
    x = torch.randn(48, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    batches = {"pixel_values": x, "labels": (x[:, 0, :4, :4].mean((1, 2)) > 0).long()}
    results = find_with_trainer(tmp_path, model, batches, lambda n, p: p.dim() == 2 and "embeddings" not in n)
    assert results["status"] == "complete" and len(results["levels"]) == 2
    prunable = results["config"]["prunable"]  # names differ across transformers versions
    assert sum("attention" in n for n in prunable) >= 4 and "classifier.weight" in prunable
    assert not any("embeddings" in n or "norm" in n for n in prunable)


def test_gpt2_from_a_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    config = transformers.GPT2Config(vocab_size=20, n_positions=8, n_embd=16, n_layer=1, n_head=2, num_labels=2,
                                     pad_token_id=19)
    torch.manual_seed(0)
    model = transformers.GPT2ForSequenceClassification(config)
    ids = torch.randint(0, 19, (48, 6), generator=torch.Generator().manual_seed(0))  # never the pad token
    batches = {"input_ids": ids, "labels": (ids[:, 0] < 10).long()}
    # GPT-2's projections are transformers' Conv1D, not nn.Linear: name them (here: every 2-d weight but wte/wpe)
    results = find_with_trainer(tmp_path, model, batches,
                                lambda n, p: p.dim() == 2 and not n.startswith(("transformer.wte", "transformer.wpe")),
                                reinit=gpt2_draw)
    assert results["status"] == "complete"
    assert {"transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight", "score.weight"} <= \
        set(results["config"]["prunable"])

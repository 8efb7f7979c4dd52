"""Trainer callbacks that keep a lottery mask in force inside other training frameworks.

Each lives in its own module and imports its framework only when that module is imported, so ``lottery`` never
needs them: ``lottery.integrations.lightning`` (PyTorch Lightning) and ``lottery.integrations.huggingface``
(Hugging Face ``Trainer``). Use them inside the ``train_fn`` that :func:`lottery.find_tickets` calls once per level
and arm; find_tickets does the pruning, rewinding, controls and bookkeeping around ``trainer.fit`` /
``trainer.train``.
"""

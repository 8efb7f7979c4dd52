"""Collection of the docstring examples in lottery/: the integration modules import their framework (an optional
extra) at import time, so they are left out where it is not installed; their tests skip there too."""
import importlib.util

collect_ignore = []
if importlib.util.find_spec("lightning") is None and importlib.util.find_spec("pytorch_lightning") is None:
    collect_ignore.append("lottery/integrations/lightning.py")
if importlib.util.find_spec("transformers") is None:
    collect_ignore.append("lottery/integrations/huggingface.py")

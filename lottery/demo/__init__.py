"""The interactive init/ticket playground (``lottery demo``): logic in ``playground``, widgets in ``widgets``."""

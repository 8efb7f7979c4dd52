"""What users see: printed tables (``tables``), figures (``plots``), tidy DataFrames (``frames``), TensorBoard and
MLflow trackers (``trackers``) and progress bars (``progress``)."""

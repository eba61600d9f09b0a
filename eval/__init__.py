"""Evaluation for GLIA-HF: IQA metrics as `evaluate` modules, per-split summaries and the paper's
tables, scatter plots, and gMAD pair selection. Model-independent; anything that needs a model
imports `glia_hf` lazily."""

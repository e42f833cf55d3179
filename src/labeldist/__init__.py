"""labeldist: how confident is an LLM in each label, and does that match how people disagree?

The library behind the Snakemake workflow: data loading and reference distributions, prompts,
per-step label distributions, estimators, training, metrics and figures.
"""

__version__ = "0.1.0"

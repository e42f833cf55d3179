"""The files passed between stages (docs/formats.md), one reader and one writer per file kind.

So far: the estimate files (`labeldist.artifacts.estimates`): per-label confidences of every estimator,
the probes' per-layer estimates and own-label scores.
"""

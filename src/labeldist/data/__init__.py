"""Data stage: loaders per dataset format, label pooling, reference distributions p_ref, id subsets.

Every loader returns a `LabelledData` of `Example`s with the same fields (docs/formats.md, "Data");
`prepare_data` is what the `prepare_data` rule calls.
"""

from .prepare import LOADERS, input_files, load_labelled_data, prepare_data, write_prepared
from .records import (NONE_LABEL, SPLITS, Example, LabelledData, Origin, example_from_annotations,
                      example_from_distribution, example_from_gold, gold_from_shares, majority_label,
                      p_ref_from_annotations, p_ref_from_gold, p_ref_from_votes)
from .subsets import make_subsets

__all__ = [
    "LOADERS", "NONE_LABEL", "SPLITS", "Example", "LabelledData", "Origin", "example_from_annotations",
    "example_from_distribution", "example_from_gold", "gold_from_shares", "input_files",
    "load_labelled_data", "majority_label", "make_subsets", "p_ref_from_annotations", "p_ref_from_gold",
    "p_ref_from_votes", "prepare_data", "write_prepared",
]

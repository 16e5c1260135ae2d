"""Data: MSD loading and preprocessing, patches and augmentation, synthetic datasets, checks."""

from .check import CheckReport, check_dataset
from .msd import DataError, MSDDataset, PreprocessedCase, Preprocessor, write_label_like
from .patches import PatchDataset, augment, candidate_patch_sizes, extract_patch, make_loader
from .synthetic import make_msd_dataset

__all__ = [
    "CheckReport",
    "DataError",
    "MSDDataset",
    "PatchDataset",
    "PreprocessedCase",
    "Preprocessor",
    "augment",
    "candidate_patch_sizes",
    "check_dataset",
    "extract_patch",
    "make_loader",
    "make_msd_dataset",
    "write_label_like",
]

"""edgecomp: compress, export and profile PyTorch models for phones and ARM boards."""

__version__ = "0.1.0"

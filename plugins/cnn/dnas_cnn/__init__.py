"""dnas-cnn: a CNN search space for dnas (the paper's sample extension, section V-B)."""

__version__ = "0.1.0"

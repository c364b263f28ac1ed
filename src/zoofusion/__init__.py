"""zoofusion: generate CNNs from the kernels of model zoos, and measure whether they work."""

__version__ = "0.1.0"

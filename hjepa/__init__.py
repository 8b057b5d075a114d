"""hjepa: Hierarchical JEPA vision encoders — train, export, evaluate and inspect."""

__version__ = "0.1.0"

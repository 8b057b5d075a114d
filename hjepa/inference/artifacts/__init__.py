"""Saved-model files: training checkpoints, encoder artifacts, runtime metadata, hashes, level parsing."""

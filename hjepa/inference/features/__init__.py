"""Feature maths: one-pass extraction over every level, the on-disk cache, k-NN."""

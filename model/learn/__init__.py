"""Learning: the GCN and its folded form, DCT, soft-DTW, training, folds, metrics, saved models."""

"""Learning: the GCN and its folded form, DCT, soft-DTW, targets, training, the saved model."""

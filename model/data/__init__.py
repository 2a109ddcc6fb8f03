"""Reading data: sequences, skeletons, normalisation, file formats, datasets, synthetic data."""

"""Evaluating: metrics through the scoring path, leave-one-subject-out folds, their pictures."""

"""Serving: the one scoring path, segmentation of sessions, feedback in words."""

"""Evaluation and the data flywheel: feedback on served requests, datasets, and offline eval runs."""

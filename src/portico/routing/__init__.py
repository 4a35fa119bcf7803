"""Routing: a learned preference router (strong vs weak model) and its pipeline step."""

from portico.routing.calibration import strong_share, threshold_for_share
from portico.routing.preference import PairwiseRecord, PreferenceModel, TrainConfig, train

__all__ = ["PairwiseRecord", "PreferenceModel", "TrainConfig", "strong_share", "threshold_for_share", "train"]

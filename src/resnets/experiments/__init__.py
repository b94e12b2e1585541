"""Experiments: the depth (degradation) study, the remedies study and the lesion study, one recipe.

``recipe`` holds the training recipe they share, ``runner`` the loop that runs a study in its
folder, and ``measure`` the training and measuring of one model that every study does.
"""

from .degradation import ModelResult, StudyConfig, run_study
from .recipe import RECIPE, StudyRecipe

__all__ = ["RECIPE", "ModelResult", "StudyConfig", "StudyRecipe", "run_study"]

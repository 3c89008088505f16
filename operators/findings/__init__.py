"""Findings (issue 17): each participant against their own baseline, moments and per-task
summaries, computed from a clip's timeline before it is written."""

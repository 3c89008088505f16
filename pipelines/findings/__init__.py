"""Findings on planted sessions: threshold tuning and the figures of ``CARD.md``."""

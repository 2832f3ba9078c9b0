"""Labelled prompts for measuring the router (train and held-out splits)."""

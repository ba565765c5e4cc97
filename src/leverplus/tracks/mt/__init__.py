"""The mt track: its data, models, stages and report."""

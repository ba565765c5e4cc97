"""The consistency track: its data, models, stages and report."""

"""The sentiment track: its data, models, stages and report."""

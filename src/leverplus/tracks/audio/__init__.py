"""The audio track: edge vs cloud vs cascade emotion captions (data, Omni models, stages, report)."""

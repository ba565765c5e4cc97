"""One package per track over the shared core (metrics, stats, api, serving, report, io, config, runtime)."""

"""Lever-Plus."""

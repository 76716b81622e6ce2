"""Frozen dataclasses shared by every layer: inventory snapshot, desired state, agent status, issues.

Imports the standard library only.
"""

"""Changelog-backed tables: one table per module."""

"""Branches, loops and calls of named pipelines in an application's steps, with CEL conditions (see build.py)."""

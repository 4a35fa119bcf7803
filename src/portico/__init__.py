"""Portico: a self-hosted generative-AI platform behind one OpenAI-compatible endpoint."""

__version__ = "0.1.0"

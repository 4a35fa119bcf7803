"""Anthropic Messages API (``POST /v1/messages``): OpenAI chat requests, responses and streams translated both
ways. System prompts move to the top-level ``system`` field, tool calls become ``tool_use``/``tool_result``
blocks, and the SSE event sequence is folded into OpenAI chunks."""

from portico.gateway.providers.anthropic.translate import AnthropicProvider

__all__ = ["AnthropicProvider"]

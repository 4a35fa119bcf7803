"""Provider folders, one per upstream API family. ``http_provider`` maps a config ``provider`` to its translator."""

from __future__ import annotations

from portico.gateway.providers.base import HttpProvider


def http_provider(name: str) -> HttpProvider:
    # Imported lazily so a deployment's provider module loads only when the config uses it.
    if name == "openai":
        from portico.gateway.providers.openai import OpenAIProvider

        return OpenAIProvider()
    if name == "azure":
        from portico.gateway.providers.openai import AzureOpenAIProvider

        return AzureOpenAIProvider()
    if name == "anthropic":
        from portico.gateway.providers.anthropic import AnthropicProvider

        return AnthropicProvider()
    if name in ("gemini", "vertex"):
        from portico.gateway.providers.gemini import GeminiProvider

        return GeminiProvider()
    if name == "bedrock":
        from portico.gateway.providers.bedrock import BedrockProvider

        return BedrockProvider()
    raise ValueError(f"unknown HTTP provider '{name}'")

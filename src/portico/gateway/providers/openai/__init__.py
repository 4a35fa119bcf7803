"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, llama.cpp server, Groq, Together, Mistral, DeepSeek,
OpenRouter) and the Azure OpenAI variant. The wire format is already ours, so translation is a rename of the
model, URL and auth header plus normalising the stream."""

from portico.gateway.providers.openai.translate import AzureOpenAIProvider, OpenAIProvider

__all__ = ["AzureOpenAIProvider", "OpenAIProvider"]

"""Wire types shared by every layer: OpenAI chat/embeddings requests, response builders, errors, SSE."""

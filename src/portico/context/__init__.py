"""Context construction: system prompts, query rewriting, retrieval from knowledge bases (knowledge/) and packing the
retrieved chunks into the prompt with citations."""

"""The HTTP surface: parse, hand to the pipeline, encode (JSON or SSE). No business logic here."""

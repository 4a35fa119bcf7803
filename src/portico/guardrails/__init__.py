"""Guardrails: input checks (PII masking, injection/jailbreak detection) and output checks, as pipeline steps."""

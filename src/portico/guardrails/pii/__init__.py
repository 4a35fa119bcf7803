"""PII: a regex/checksum tier, an NER tier (spaCy, or Presidio's analyzer), reversible placeholder masking."""

from portico.guardrails.pii.detector import PIIDetector, Span
from portico.guardrails.pii.masking import Masker, StreamUnmasker, unmask

__all__ = ["Masker", "PIIDetector", "Span", "StreamUnmasker", "unmask"]

"""``tracing.content: redacted``: the content a trace stores (prompt, answer, tool arguments, the retrieved text
packed into the prompt, the steps' notes) with personal data replaced by placeholders, for requests that no
``pii`` step already masked.

The same recognisers as the ``pii`` step with its defaults (regex/checksum tier, spaCy NER in a worker process,
name and place lexicons; DATE_TIME, NRP and TITLE allowed), run by the background trace writer — never on the
request path. Placeholders are numbered across one trace's values, and no mapping back is kept: a redacted trace
cannot be unmasked.
"""

from __future__ import annotations

from typing import Any

from portico.guardrails.pii.detector import PIIDetector
from portico.guardrails.pii.masking import Masker
from portico.guardrails.pii.step import DEFAULT_ENTITIES

# Message fields that name structure, not content (kept as they are).
_STRUCTURAL = frozenset({"role", "type", "id", "tool_call_id", "finish_reason", "detail"})


class TraceRedactor:
    def __init__(self, detector: PIIDetector | None = None) -> None:
        self.detector = detector or PIIDetector(ner="spacy", ner_process=True)

    def redact(self, values: list[Any]) -> list[Any]:
        """Copies of ``values`` (JSON-able) whose strings hold placeholders instead of the PII found in them."""
        masker = Masker()
        return [self._walk(v, None, masker) for v in values]

    def close(self) -> None:
        self.detector.close()

    def _walk(self, value: Any, key: str | None, masker: Masker) -> Any:
        if isinstance(value, str):
            return value if key in _STRUCTURAL else self._text(value, masker)
        if isinstance(value, dict):
            return {k: self._walk(v, k, masker) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v, key, masker) for v in value]
        return value

    def _text(self, text: str, masker: Masker) -> str:
        if text.startswith("data:"):
            return "[DATA_URL]"  # an inline image or file: not text the recognisers can read, and large
        found = [s for s in self.detector.detect(text) if DEFAULT_ENTITIES.get(s.type, "mask") != "allow"]
        return masker.mask(text, found) if found else text

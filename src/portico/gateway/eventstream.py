"""AWS event-stream framing (``application/vnd.amazon.eventstream``, Bedrock's ConverseStream) → ``(event, data)``
pairs like the SSE reader's, so a provider's stream translator sees one shape whatever the wire framing.

The binary frames (prelude, headers, payload, CRC32s) are decoded by botocore's ``EventStreamBuffer``, the
parser the AWS SDK itself uses. Event messages become ``(":event-type", payload)``; exception and error messages
become ``("exception:<type>", payload)`` for the translator to raise as the upstream's error.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from portico.protocol.errors import UpstreamError

EVENTSTREAM = "application/vnd.amazon.eventstream"
EXCEPTION = "exception:"


def is_binary_frame(first: bytes) -> bool:
    """A frame starts with its big-endian total length (at most 16 MiB + headers: first byte 0 or 1); text
    framings start with a printable character."""
    return first[:1] in (b"\x00", b"\x01")


async def prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _event(msg: EventStreamMessage) -> tuple[str | None, bytes]:
    headers = msg.headers
    kind = headers.get(":message-type", "event")
    if kind == "event":
        return headers.get(":event-type"), msg.payload
    if kind == "exception":
        return EXCEPTION + str(headers.get(":exception-type", "exception")), msg.payload
    # "error": the reason is in headers, not the payload
    return EXCEPTION + str(headers.get(":error-code", "error")), str(headers.get(":error-message", "")).encode()


async def eventstream_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[str | None, bytes]]:
    """Messages as they complete, whatever the chunking of the bytes; raises on a broken or unfinished frame."""
    buf = EventStreamBuffer()
    try:
        async for data in chunks:
            buf.add_data(data)
            for msg in buf:
                yield _event(msg)
    except ParserError as e:
        raise UpstreamError(f"upstream sent a broken event-stream frame: {e}", status=502) from None
    if buf._data:  # botocore keeps an unfinished frame here (no public accessor)
        raise UpstreamError("upstream event stream ended inside a frame", status=502)

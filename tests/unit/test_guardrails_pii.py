"""PII: checksum recognizers, placeholder masking, unmasking of plain and streamed answers, the pii step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from portico.guardrails.pii import Masker, PIIDetector, StreamUnmasker, unmask
from portico.guardrails.pii.detector import merge
from portico.guardrails.pii.recognizers import iban_ok, luhn_ok, regex_hits
from portico.guardrails.pii.step import MAPPING, pii_step
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest


def types(text: str) -> dict[str, str]:
    return {s.text: s.type for s in merge(text, regex_hits(text))}


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE88 3704 0044 0532 0130 00")
    found = types("card 4111 1111 1111 1111 or 4111 1111 1111 1112; iban GB82WEST12345698765432")
    assert found.get("4111 1111 1111 1111") == "CREDIT_CARD"
    assert "4111 1111 1111 1112" not in found or found["4111 1111 1111 1112"] != "CREDIT_CARD"
    assert found.get("GB82WEST12345698765432") == "IBAN_CODE"


def test_regex_tier_types() -> None:
    text = (
        "mail a.b@example.org, ssn 123-45-6789 (not 666-12-3456), ip 10.0.0.255 (not 999.1.1.1), "
        "key sk-proj-abcdefghijklmnopqrstuv0123, token=ghp_abcdefghijklmnopqrstuvwxyz0123456789, "
        "call +44 20 7946 0958, see https://example.com/x, at 221 Baker Street, London"
    )
    found = types(text)
    assert found["a.b@example.org"] == "EMAIL_ADDRESS"
    assert found["123-45-6789"] == "US_SSN" and found.get("666-12-3456") != "US_SSN"
    assert found["10.0.0.255"] == "IP_ADDRESS" and "999.1.1.1" not in found
    assert found["sk-proj-abcdefghijklmnopqrstuv0123"] == "API_KEY"
    assert found["ghp_abcdefghijklmnopqrstuvwxyz0123456789"] == "API_KEY"
    assert found["+44 20 7946 0958"] == "PHONE_NUMBER"
    assert found["https://example.com/x"] == "URL"
    assert found["221 Baker Street, London"] == "ADDRESS"


def test_titles_and_ages() -> None:
    found = types("Dr. Alice Moore, aged 58, met a 7-year-old boy")
    assert found["Dr."] == "TITLE" and found["58"] == "AGE" and found["7"] == "AGE"


def test_context_rules_ages_zips_companies() -> None:
    found = types("I just turned 47. I'll turn 21 on Sunday. Written when he was 65. ZIP: 7412 SL, postcode 94107")
    assert found["47"] == found["21"] == found["65"] == "AGE"
    assert found["7412 SL"] == found["94107"] == "ZIP_CODE"
    quiet = types("Turn 3 pages, when it was 10 pm; 5 turned up. ZIP files are 4096 bytes")
    assert "AGE" not in quiet.values() and "ZIP_CODE" not in quiet.values()
    assert types("I work for 48 Factoring Inc now")["48 Factoring Inc"] == "ORGANIZATION"
    assert types("The Acme Holdings Ltd. board")["Acme Holdings Ltd."] == "ORGANIZATION"
    assert "ORGANIZATION" not in types("Inc and Ltd alone are not names").values()


def test_multiline_address() -> None:
    text = "Ship it to 96 Via Moiariello 102\n Suite 850\n Calascibetta\n Czech Republic 07512 please"
    assert types(text)["96 Via Moiariello 102\n Suite 850\n Calascibetta\n Czech Republic 07512"] == "ADDRESS"


def test_no_false_address_in_prose() -> None:
    assert "ADDRESS" not in types("I have 3 dogs on the street and run 5 miles a day")
    assert "ADDRESS" not in types("Top 10 ways to save money, with 3 key points and 2 views")


@pytest.fixture(scope="module")
def detector() -> PIIDetector:
    return PIIDetector()


def test_detector_merges_ner_and_regex(detector: PIIDetector) -> None:
    spans = detector.detect("My name is John Smith and my email is john@acme.com; I live in Paris.")
    got = {s.text: s.type for s in spans}
    assert got["John Smith"] == "PERSON" and got["john@acme.com"] == "EMAIL_ADDRESS" and got["Paris"] == "LOCATION"


def test_ner_keeps_concrete_dates_and_retypes_places(detector: PIIDetector) -> None:
    found = {s.text: s.type for s in detector.detect("Last night I flew back; I was born on 12 March 1980.")}
    assert "Last night" not in found and "last night" not in found
    assert any(t == "DATE_TIME" and "1980" in x for x, t in found.items())
    found = {s.text: s.type for s in detector.detect("She is a 19 year old woman who grew up in KNIVSTA.")}
    assert found.get("KNIVSTA") in (None, "LOCATION")  # never an organisation after "grew up in"


def test_masker_is_stable_and_reversible(detector: PIIDetector) -> None:
    m = Masker()
    a = "Write to john@acme.com, cc mary@acme.com"
    b = "Again: john@acme.com"
    ma, mb = m.mask(a, detector.detect(a)), m.mask(b, detector.detect(b))
    assert ma == "Write to [EMAIL_ADDRESS_1], cc [EMAIL_ADDRESS_2]" and mb == "Again: [EMAIL_ADDRESS_1]"
    assert unmask(ma, m.mapping) == a and unmask("[UNKNOWN_1] stays", m.mapping) == "[UNKNOWN_1] stays"


@pytest.mark.parametrize("cut", range(1, 24))
def test_stream_unmasker_split_placeholders(cut: int) -> None:
    mapping = {"EMAIL_ADDRESS_1": "john@acme.com"}
    text = "Mail [EMAIL_ADDRESS_1] now [x] and [ "
    um = StreamUnmasker(mapping)
    out = um.feed(text[:cut]) + um.feed(text[cut : cut + 3]) + um.feed(text[cut + 3 :]) + um.flush()
    assert out == "Mail john@acme.com now [x] and [ "


def test_stream_unmasker_never_shows_half_a_placeholder() -> None:
    um = StreamUnmasker({"PERSON_1": "Ann"})
    shown = [um.feed(p) for p in ["Hi [PER", "SON", "_1]", "!"]]
    assert shown == ["Hi ", "", "Ann", "!"]


class _Services:
    metrics = None


def ctx_for(text: str, stream: bool = False) -> RequestContext:
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": text}], stream=stream)
    return RequestContext(request=req, request_id="r1", model="m")


async def test_pii_step_masks_and_closer_unmasks() -> None:
    step = pii_step({"ner": "none"}, _Services())
    ctx = ctx_for("Email john@acme.com about card 4111 1111 1111 1111")
    await step.run(ctx)
    assert ctx.request.messages[0].content == "Email [EMAIL_ADDRESS_1] about card [CREDIT_CARD_1]"
    assert ctx.state[MAPPING]["CREDIT_CARD_1"] == "4111 1111 1111 1111"
    ctx.response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok [EMAIL_ADDRESS_1]"}}]}
    assert step.closer is not None
    await step.closer.run(ctx)
    assert ctx.response["choices"][0]["message"]["content"] == "ok john@acme.com"


async def test_pii_step_blocks_by_policy() -> None:
    step = pii_step({"ner": "none", "entities": {"US_SSN": "block"}, "block_message": "no"}, _Services())
    ctx = ctx_for("my ssn is 123-45-6789")
    await step.run(ctx)
    assert ctx.answered_by == "pii" and ctx.response is not None
    assert ctx.response["choices"][0]["message"]["content"] == "no"


async def test_pii_step_allow_policy_leaves_text() -> None:
    step = pii_step({"ner": "none", "default": "allow"}, _Services())
    ctx = ctx_for("Email john@acme.com")
    await step.run(ctx)
    assert ctx.request.messages[0].content == "Email john@acme.com" and MAPPING not in ctx.state


async def test_pii_closer_unmasks_a_stream() -> None:
    step = pii_step({"ner": "none"}, _Services())
    ctx = ctx_for("Email john@acme.com", stream=True)
    await step.run(ctx)
    pieces = ["Sent to [EMA", "IL_ADDRE", "SS_1", "] done [EMAIL_ADDRESS_1"]

    async def upstream() -> AsyncIterator[dict[str, Any]]:
        for p in pieces:
            yield {"id": "c", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
        yield {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}

    ctx.stream = upstream()
    assert step.closer is not None
    await step.closer.run(ctx)
    assert ctx.stream is not None
    chunks = [c async for c in ctx.stream]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Sent to john@acme.com done [EMAIL_ADDRESS_1"
    assert all("[EMA" not in (c["choices"][0]["delta"].get("content") or "") for c in chunks[:3])


async def test_redacted_trace_content_is_the_masked_form() -> None:
    from portico.observability.spans import masked_content as redacted_content

    step = pii_step({"ner": "none"}, _Services())
    ctx = ctx_for("Email john@acme.com")
    assert redacted_content(ctx) == (None, None)  # nothing scanned: nothing stored
    await step.run(ctx)
    ctx.response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "to [EMAIL_ADDRESS_1]"}}]}
    assert step.closer is not None
    await step.closer.run(ctx)
    prompt, answer = redacted_content(ctx)
    assert "john@acme.com" not in str(prompt) + str(answer) and "[EMAIL_ADDRESS_1]" in str(answer)
    assert ctx.response["choices"][0]["message"]["content"] == "to john@acme.com"


async def test_pii_closer_unmasks_streamed_tool_arguments() -> None:
    step = pii_step({"ner": "none"}, _Services())
    ctx = ctx_for("Email john@acme.com", stream=True)
    await step.run(ctx)
    parts = ['{"to": "[EMAIL_AD', 'DRESS_1]", "x": "[EMAIL_ADDRESS_1']

    async def upstream() -> AsyncIterator[dict[str, Any]]:
        for p in parts:
            tc = {"index": 0, "function": {"arguments": p}}
            yield {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [tc]}, "finish_reason": None}]}
        yield {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}

    ctx.stream = upstream()
    assert step.closer is not None
    await step.closer.run(ctx)
    assert ctx.stream is not None
    args = "".join(
        tc["function"]["arguments"]
        for c in [c async for c in ctx.stream]
        for tc in c["choices"][0]["delta"].get("tool_calls", [])
    )
    assert args == '{"to": "john@acme.com", "x": "[EMAIL_ADDRESS_1'


def test_intersections_and_second_units() -> None:
    assert (
        types("meet at the corner of Pachergasse 64 and Radolič Harbor.")[
            "the corner of Pachergasse 64 and Radolič Harbor"
        ]
        == "ADDRESS"
    )
    found = types("It went to 2035 Gewerbepark 45 Apt. 815 Suite 979, Brú, Iceland 82407 last night")
    assert found["2035 Gewerbepark 45 Apt. 815 Suite 979, Brú, Iceland 82407"] == "ADDRESS"


def test_labelled_card_without_checksum_and_job_titles() -> None:
    # A card number after its label is masked as one even when its checksum fails (a typo is still a card).
    assert types("card number 630427373398 is lost")["630427373398"] == "CREDIT_CARD"
    assert "CREDIT_CARD" not in types("call 630427373398 tomorrow").values()
    assert types("I used to work for Usaa Group as Rolling machine operator, but quit")["Rolling machine operator"] == (
        "TITLE"
    )
    assert "TITLE" not in types("He worked for us as well, and for them as a result of the merger.").values()
    assert types("My driver's license number is A56319335")["A56319335"] == "US_DRIVER_LICENSE"

"""Street addresses: whole, or field by field where the text lays them out so (addresses.components)."""

from __future__ import annotations

import pytest

from portico.guardrails.pii.addresses import addresses, components
from portico.guardrails.pii.detector import PIIDetector
from portico.guardrails.pii.recognizers import regex_hits


@pytest.fixture(scope="module")
def detector() -> PIIDetector:
    return PIIDetector()


def spans(det: PIIDetector, text: str) -> list[tuple[str, str]]:
    return [(s.text, s.type) for s in det.detect(text)]


def test_a_letters_address_block_is_split_into_its_fields(detector: PIIDetector) -> None:
    text = "Marisa Bisliev\n\n583 Magrethevej 298\n Apt. 123\n Qasigiannguit\n Greenlander 07609"
    assert spans(detector, text) == [
        ("Marisa Bisliev", "PERSON"),
        ("583", "ADDRESS"),
        ("Magrethevej 298", "ADDRESS"),
        ("Apt. 123", "ADDRESS"),
        ("Qasigiannguit", "LOCATION"),
        ("Greenlander", "LOCATION"),
        ("07609", "ADDRESS"),
    ]
    quoted = ">Ella H. Snider\n>Otc Markets\n>228 Ringvej 144\n>Apt. 902\n>Qaqortoq\n>Greenlander 96817"
    assert ("Ringvej 144", "ADDRESS") in spans(detector, quoted) and ("Qaqortoq", "LOCATION") in spans(detector, quoted)


def test_the_same_layout_in_a_sentence_or_under_a_company_is_one_address(detector: PIIDetector) -> None:
    block = "1987 74 Diakou Street\n Suite 680\n Kissousa\n Cyprus 36903"
    assert (block, "ADDRESS") in spans(detector, f"Please send a new one to {block}? Thanks")
    assert (block, "ADDRESS") in spans(detector, f"Compendia Bioscience Life Technologies\n\n{block}")


def test_a_number_before_a_numbered_street_ending_a_sentence(detector: PIIDetector) -> None:
    assert spans(detector, "The bus drops you off at 4823 Ringvej 144 St.") == [
        ("4823", "ADDRESS"),
        ("Ringvej 144", "ADDRESS"),
    ]
    got = spans(detector, "Tomomi lives at 86036 Rua do Arenque 1634, Goiânia")
    assert ("86036", "ADDRESS") in got and ("Rua do Arenque 1634", "ADDRESS") in got and ("Goiânia", "LOCATION") in got
    # A full address with a unit or a city and a country stays whole.
    whole = "5586 Þórunnarstræti 31, Arnsdorf, Germany"
    assert spans(detector, f"User: {whole}") == [(whole, "ADDRESS")]
    tail = "8514 Lyngveien 46 Apt. 085 BODØ nan"  # the place after the unit, on its line
    assert (tail, "ADDRESS") in spans(detector, f"Meet me at {tail}")


@pytest.mark.parametrize(
    "text",
    [
        "Chapter 3 Verse 16 says so.",
        "Python 3 Version 11 is out.",
        "Flight 405 Boeing 737 landed.",
        "Call me at 0494 92 82 32 I'd like to join",
        "I have 2 Kids 5 and 7.",
    ],
)
def test_numbers_around_common_words_are_no_address(detector: PIIDetector, text: str) -> None:
    assert "ADDRESS" not in {t for _, t in spans(detector, text)}


def test_regex_forms() -> None:
    def found(text: str) -> list[str]:
        return [text[s:e] for s, e, _, _ in addresses(text)]

    # A unit word must end there: "United Kingdom" is a country line, not "Unit" + "ed".
    assert found("14 Crown Street\n Suite 321\n LONDON\n United Kingdom 75419") == [
        "14 Crown Street\n Suite 321\n LONDON\n United Kingdom 75419"
    ]
    assert found("Send it to 3565 Πλατεία Συντάγματος 204, Λευκωσία") == ["3565 Πλατεία Συντάγματος 204, Λευκωσία"]
    assert found("It is 6614 Luite tee 87 now") == ["6614 Luite tee 87"]  # a lower-case street type
    assert found("Ship to 7943 2027 Prospect St, Dehylov") == ["7943 2027 Prospect St, Dehylov"]
    assert found("psc 5420, box 2708\napo aa 33879") == ["psc 5420, box 2708\napo aa 33879"]


def test_components_without_the_ner() -> None:
    text = "28030 Edeby 55\n Apt. 297\n TYSTBERGA\n Sweden 99178"
    parts = components(text, regex_hits(text), lambda s, e: False)
    assert sorted((text[s:e], t) for s, e, t, _ in parts) == [
        ("28030", "ADDRESS"),
        ("99178", "ADDRESS"),
        ("Apt. 297", "ADDRESS"),
        ("Edeby 55", "ADDRESS"),
        ("Sweden", "LOCATION"),
        ("TYSTBERGA", "LOCATION"),
    ]
    # After a line that is no person's name (a company's), the block is one address.
    text = "Dataweave\n\n" + text
    parts = components(text, regex_hits(text), lambda s, e: False)
    assert [(text[s:e], t) for s, e, t, _ in parts] == [(text[11:], "ADDRESS")]


def test_the_line_above_a_signatures_address_names_the_company(detector: PIIDetector) -> None:
    text = "Julcsa Kárpáthy\nMhealthcoach\n50668 Kiannonkatu 98 Apt. 105, ISHAM, United Kingdom"
    got = spans(detector, text)
    assert ("Mhealthcoach", "ORGANIZATION") in got and ("Julcsa Kárpáthy", "PERSON") in got
    quoted = ">Ella H. Snider\n>Otc Markets\n>Ella H. Snider\n>228 Ringvej 144\n>Apt. 902\n>Qaqortoq\n>Greenland 96817"
    assert ("Otc Markets", "ORGANIZATION") in spans(detector, quoted)  # names above it are skipped
    # A field label above the address is no company, and neither is anything above an address inside a sentence.
    assert "ORGANIZATION" not in {t for _, t in spans(detector, "Ship to:\n50668 Kiannonkatu 98 Apt. 105, ISHAM")}
    assert "ORGANIZATION" not in {t for _, t in spans(detector, "Hello there\nI live at 221 Baker Street, London")}


def test_po_boxes() -> None:
    text = "Meet me at P.O. Box 149 Monika Union\n Apt. 485\n Pituffik\n Greenlander 52888"
    assert [text[s:e] for s, e, _, _ in addresses(text)] == [text[11:]]

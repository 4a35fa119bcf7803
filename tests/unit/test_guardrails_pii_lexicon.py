"""The name and place lexicons beside the spaCy NER: each case below is one the NER alone gets wrong."""

from __future__ import annotations

import pytest

from portico.guardrails.pii.detector import PIIDetector
from portico.guardrails.pii.lexicon import Lexicon, org_evidence


@pytest.fixture(scope="module")
def detectors() -> tuple[PIIDetector, PIIDetector]:
    return PIIDetector(lexicon=False), PIIDetector()


def found(det: PIIDetector, text: str) -> dict[str, str]:
    return {s.text: s.type for s in det.detect(text)}


def test_lists_are_read_from_faker() -> None:
    lex = Lexicon.load()
    assert {"Sara", "Jožef", "Kevin"} <= lex.first and {"Schwarz", "Hughes"} <= lex.last
    assert "France" in lex.countries and lex.places["helsinki"] == "Helsinki"
    assert not lex.is_person("US") and not lex.is_person("The Smith")  # "US" is not the name "Us"


@pytest.mark.parametrize(
    ("text", "value", "typ"),
    [
        ("Maybe it's under Miklós Hajdu", "Miklós Hajdu", "PERSON"),  # the NER says ORG
        ("What's your last name? Turgeon", "Turgeon", "PERSON"),  # an ORG with a known surname, no company sign
        ("They had 6: Gaetane, Hannah, Anthony, Derek, Anna and Andrew.", "Derek", "PERSON"),  # the NER misses it
        ("We moved here from Tjæreborg", "Tjæreborg", "LOCATION"),  # the NER says ORG
        ("Aristóteles spent a year at Weeks-Rivas as the assistant", "Weeks-Rivas", "ORGANIZATION"),
    ],
)
def test_lexicon_finds_what_the_ner_misses(detectors: tuple[PIIDetector, PIIDetector], text: str, value: str,
                                          typ: str) -> None:  # fmt: skip
    plain, lexicon = detectors
    assert found(lexicon, text).get(value) == typ
    assert found(plain, text).get(value) != typ


def test_places_and_licences(detectors: tuple[PIIDetector, PIIDetector]) -> None:
    lex = Lexicon.load()
    text = "Cyprus is sunny and Helsinki is cold"
    got = {text[s:e]: (t, score) for s, e, t, score in lex.hits(text)}
    assert got["Cyprus"] == ("LOCATION", 0.88) and got["Helsinki"][0] == "LOCATION"  # a country outranks a PERSON
    _, lexicon = detectors
    assert found(lexicon, "My driver's license number is A56319335")["A56319335"] == "US_DRIVER_LICENSE"
    assert "US_DRIVER_LICENSE" not in found(lexicon, "A license for 12345678 drivers")


def test_organisations_with_evidence_only(detectors: tuple[PIIDetector, PIIDetector]) -> None:
    _, lexicon = detectors
    text = "Are there any charges to withdraw money from ATM with my card?"
    assert found(lexicon, text).get("ATM") == "ORGANIZATION"  # default: every NER organisation is masked
    strict = PIIDetector(organizations="evidence")
    assert "ATM" not in found(strict, text)  # a bare ORG: scored under the default min_score
    assert found(strict, "He worked at Google for years").get("Google") == "ORGANIZATION"  # an employer cue
    assert found(strict, "Russell Investments is a design agency")["Russell Investments"] == "ORGANIZATION"
    assert org_evidence("I work for Acme", 11, 15) and not org_evidence("Acme is big", 0, 4)


def test_the_words_after_an_employer_cue_are_the_employer(detectors: tuple[PIIDetector, PIIDetector]) -> None:
    _, lexicon = detectors
    text = "Alvir spent a year at Weeks-Rivas, and the following year at Poweradvocate in Bremen."
    got = found(lexicon, text)
    assert got["Weeks-Rivas"] == got["Poweradvocate"] == "ORGANIZATION" and got.get("Bremen") == "LOCATION"
    assert found(lexicon, "I work for Flightstats")["Flightstats"] == "ORGANIZATION"
    assert "ORGANIZATION" not in found(lexicon, "I worked for The weekend only").values()  # a stop word first


def test_everyday_words_stay_unlabelled(detectors: tuple[PIIDetector, PIIDetector]) -> None:
    _, lexicon = detectors
    got = found(lexicon, "We live and love. The US and America, Muslim or Christian: it is where we live.")
    assert not any(t == "PERSON" for t in got.values()), got


def test_entities_end_at_the_line_and_legal_forms_are_companies(detectors: tuple[PIIDetector, PIIDetector]) -> None:
    _, lexicon = detectors
    got = found(lexicon, "Cormac Allan\nEchocardiographer\nPlaceilivecom")
    assert got.get("Cormac Allan") == "PERSON" and not any("\n" in k for k in got)  # not "Allan\nEchocardiographer"
    assert found(lexicon, "Maika van de Noort\nEmployment manager\nOpportunityspace Inc")["Opportunityspace Inc"] == (
        "ORGANIZATION"
    )


def test_lists_and_cues_defer_to_places_and_titles(detectors: tuple[PIIDetector, PIIDetector]) -> None:
    _, lexicon = detectors
    assert set(found(lexicon, "I loved Paris, London and Berlin.").values()) == {"LOCATION"}
    # The NER calls it an ORG, and both words are first names: the country list decides.
    assert found(lexicon, "Sierra Leone is beautiful in May").get("Sierra Leone") == "LOCATION"
    assert "LOCATION" not in found(lexicon, "We are visiting Professor Smith tomorrow").values()
    got = found(lexicon, "They had 6: Hleb, Sheila, Donna and Shane.")
    assert all(got.get(n) == "PERSON" for n in ("Hleb", "Sheila", "Shane")), got


def test_a_job_before_a_full_name_is_left_out(detectors: tuple[PIIDetector, PIIDetector]) -> None:
    _, lexicon = detectors
    got = found(lexicon, "Producer Liviana Palerma explained to Fuse TV why.")
    assert got.get("Liviana Palerma") == "PERSON" and "Producer Liviana Palerma" not in got
    assert found(lexicon, "Will Smith arrived.").get("Will Smith") == "PERSON"  # a first name that is also a word

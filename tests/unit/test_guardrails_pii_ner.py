"""The shipped fine-tuned NER: it loads on top of the packaged spaCy model, finds names and addresses in sentences
it never saw, still finds generic entities, and its training record shows no benchmark test sentence was used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portico.guardrails.pii.ner import TUNED_NER, load_spacy
from portico.guardrails.pii.step import pii_step
from portico.guardrails.pii.train import DATA, is_test, template

MANIFEST = TUNED_NER.parent / "pii_ner_data.json"


class _Services:
    metrics = None

    def __init__(self) -> None:
        self.closers: list = []

    def on_close(self, close) -> None:  # type: ignore[no-untyped-def]
        self.closers.append(close)


@pytest.fixture(scope="module")
def nlp():  # type: ignore[no-untyped-def]
    return load_spacy(ner_weights=TUNED_NER)


def ents(nlp, text: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {e.text: e.label_ for e in nlp(text).ents}


def test_tuned_ner_finds_a_person_and_an_address_it_was_not_trained_on(nlp) -> None:  # type: ignore[no-untyped-def]
    # Written for this test: neither the sentence nor its template is in presidio-research's files.
    found = ents(nlp, "Please courier the signed lease to Margarethe Oyelaran, 4417 Quillfeather Lane, Tromsø, Norway.")
    assert found.get("Margarethe Oyelaran") == "PERSON"
    assert "ADDRESS" in found.values()  # the label the packaged model does not have


def test_tuned_ner_keeps_generic_entities(nlp) -> None:  # type: ignore[no-untyped-def]
    """Drift check: news-style entities the packaged model finds are still found with the same labels."""
    found = ents(nlp, "Angela Merkel met Emmanuel Macron in Paris on Tuesday to discuss Airbus and Germany's budget.")
    assert found.get("Angela Merkel") == found.get("Emmanuel Macron") == "PERSON"
    assert found.get("Paris") == "GPE" and found.get("Airbus") == "ORG"


async def test_pii_step_option_uses_the_tuned_ner() -> None:
    services = _Services()
    step = pii_step({"ner_weights": "tuned"}, services)  # in the worker process (ner_process: true, the default)
    text = "Send it to Oluwaseun Adeyemi, 88 Harrow Crescent Apt. 4, Dunedin, New Zealand 9016"
    spans = {s.text: s.type for s in step.detector.detect(text)}
    for close in services.closers:
        await close()
    assert spans["Oluwaseun Adeyemi"] == "PERSON"
    assert spans["88 Harrow Crescent Apt. 4, Dunedin, New Zealand 9016"] == "ADDRESS"
    with pytest.raises(ValueError, match="fits only spacy_model"):
        pii_step({"ner_weights": "tuned", "spacy_model": "en_core_web_md"}, _Services())


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no NER weights"):
        load_spacy(ner_weights=tmp_path)


def test_training_record_excludes_every_test_template() -> None:
    record = json.loads(MANIFEST.read_text())
    pii = DATA / "pii" / "presidio_research"
    if not (pii / "synth_dataset_v2.json").is_file():
        pytest.skip(f"presidio-research data not at {pii}")
    files = {"synth_dataset_v2": json.loads((pii / "synth_dataset_v2.json").read_text()),
             "generated_large": json.loads((pii / "generated_large.json").read_text())}  # fmt: skip
    test_templates = {template(d["masked"]) for d in files["synth_dataset_v2"] if is_test(d)}
    used = [files[src][i] for part in ("train", "holdout") for src, ix in record[part].items() for i in ix]
    assert len(used) > 500 and not any(template(d["masked"]) in test_templates for d in used)
    assert not any(is_test(files["synth_dataset_v2"][i]) for i in record["train"]["synth_dataset_v2"])
    excluded = record["excluded"]["test part (template_id % 3 != 0)"]["synth_dataset_v2"]
    assert sorted(excluded) == [i for i, d in enumerate(files["synth_dataset_v2"]) if is_test(d)]

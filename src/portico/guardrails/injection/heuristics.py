"""Prompt-injection and jailbreak heuristics: pattern families that become features of the classifier and an
explainable list of matched rules for the trace. English and German phrasings (the deepset set is partly
German, which the English-only MiniLM embeddings hardly see)."""

from __future__ import annotations

import re

import numpy as np

_FAMILIES: dict[str, list[str]] = {
    "ignore_instructions": [
        r"\b(?:ignore|disregard|forget|skip|override|bypass|drop)\b[\w\s,]{0,30}\b(?:previous|prior|above|earlier|"
        r"all|any|your|the|these|those|initial|original)\b[\w\s]{0,20}\b(?:instructions?|rules?|prompts?|tasks?|"
        r"directions?|guidelines?|context|information|orders?|constraints?)",
        r"\b(?:ignore|forget|disregard)\s+(?:everything|all(?: of)? (?:that|this|the above)|"
        r"what (?:i|you) (?:said|were told))",
        r"\b(?:vergiss|ignoriere|ignorieren|vergessen|missachte)\b[\w\s,]{0,40}\b(?:alles|anweisungen|aufgaben?|"
        r"vorherigen|bisherigen|obigen|regeln|informationen)",
        r"\b(?:ignora|olvida|oublie|ignorez)\b",
        r"\b(?:obigen|vorherigen|bisherigen|vorangegangenen|vorigen)\b[\w\s]{0,30}\b(?:ignorieren|vergessen|"
        r"missachten|instruktionen|anweisungen)|\babweichend zu\b",
        r"\b(?:stop|halt|stopp|attention|achtung)\b\W{1,4}(?:stop|stopp|halt)\b",
    ],
    "persona": [
        r"(?:^|[.!?]\s+)(?:you are|you're|du bist|sie sind|stell dir vor|imagine (?:you are|that you)|"
        r"pretend (?:you|to)|act as|be an?|spiel(?:e)? (?:die rolle|einen?)|as an?\b[\w\s]{0,30},\s*(?:tell|say))",
    ],
    "forced_statement": [
        r"(?:^|[.!?]\s+)(?:state|say|claim|declare|write|confirm) that\b|\b(?:sag|sage|behaupte|schreibe?) (?:dass|,)",
        r"\b(?:\w ){6,}\w\b",  # s p a c e d letters hide a command from keyword filters
        r"\b(?:make something up|erfinde|lie to me|you must answer)\b",
    ],
    "new_instructions": [
        r"\b(?:new|real|actual|updated|following)\s+(?:task|instructions?|assignment|role|objective)s?\s*(?::|is|are)",
        r"\bnow (?:you are|you're|act as|pretend|focus on|concentrate on|your (?:new )?task)",
        r"\b(?:neue|nächste) (?:aufgabe|anweisung)|\bjetzt (?:bist du|sollst du|konzentrier)|"
        r"\bnun (?:bist du|folgende)",
        r"\bfrom now on\b|\bab (?:jetzt|sofort)\b",
    ],
    "roleplay_persona": [
        r"\b(?:DAN|STAN|DUDE|AIM|jailbreak|jailbroken|developer mode|dev mode|god mode|evil (?:mode|bot|ai))\b",
        r"\b(?:do anything now|always intelligent and machiavellian|unfiltered and amoral|"
        r"without any (?:moral|ethical))",
        r"\b(?:pretend|act|roleplay|role-play|behave) (?:to be|as|like) (?:an? )?(?:ai|assistant|chatbot|model)?\s*"
        r"(?:with(?:out)? (?:no )?(?:restrictions|limits|filters|rules|guidelines))",
        r"\b(?:stay in character|two responses|dual responses|\[?🔓|\[?🔒|\(🔓|classic response|jailbreak response)",
    ],
    "no_rules": [
        r"\b(?:no|without|free of|beyond|not bound by|ignore)\s+(?:any\s+)?(?:restrictions|limitations|censorship|"
        r"filters|guidelines|content polic(?:y|ies)|ethical|moral|openai(?:'s)? polic)",
        r"\b(?:doesn't|does not|don't|do not|never) (?:have to )?(?:follow|abide|care about|adhere to)\b[\w\s]{0,20}"
        r"\b(?:rules|policies|guidelines|ethics|restrictions)",
        r"\b(?:can|will) (?:say|do) anything\b|\bnever refuse",
    ],
    "prompt_leak": [
        r"\b(?:reveal|show|print|repeat|output|display|tell me|what (?:is|was|are))\b[\w\s]{0,25}\b(?:system prompt|"
        r"initial prompt|hidden (?:prompt|instructions)|your instructions|the prompt above|original prompt|"
        r"text above|secret|password)",
        r"\b(?:zeige|gib|drucke|verrate)\b[\w\s]{0,30}\b(?:prompt|anweisungen|passwort|geheim)",
    ],
    "delimiters": [
        r"(?:^|\n)\s*(?:###|---|===|\*\*\*)\s*(?:system|instruction|new|end)",
        r"<\|?(?:im_start|im_end|system|endoftext)\|?>|\[/?INST\]|\[system\]|</?system>",
        r"\b(?:end of (?:prompt|instructions|input)|stop everything|STOP EVERYTHING)",
    ],
    "sudo": [
        r"\b(?:sudo|admin(?:istrator)? (?:mode|override|access)|root access|maintenance mode|override code)\b",
        r"\b(?:you must|you have to|du musst) (?:obey|comply|answer|gehorchen)",
    ],
}

FAMILIES = tuple(_FAMILIES)
_COMPILED = tuple(re.compile("|".join(f"(?:{p})" for p in pats), re.IGNORECASE) for pats in _FAMILIES.values())


def matched(text: str) -> list[str]:
    """The pattern families that match ``text``."""
    return [name for name, rx in zip(FAMILIES, _COMPILED, strict=True) if rx.search(text)]


def features(text: str) -> np.ndarray:
    """One 0/1 feature per family plus a damped length term (long prompts are more often jailbreaks)."""
    hits = [1.0 if rx.search(text) else 0.0 for rx in _COMPILED]
    return np.asarray([*hits, min(len(text), 4000) / 4000.0], dtype=np.float32)


N_FEATURES = len(FAMILIES) + 1

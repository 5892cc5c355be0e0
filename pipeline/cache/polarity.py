"""The negation guard: a query that negates what a cached question asks is not that question.

"My card payment was NOT declined" lies next to "my card payment was declined" in embedding
space (negation barely moves a sentence embedding), so similarity alone would serve it the
declined-payment answer. The guard finds, in each text, the content word that a negation cue
governs ("not declined" -> ``declin``) and the content words stated plainly. A query
contradicts the entries that would answer it when, for a word it negates (or affirms), most
of those entries that use the word say the opposite.

Deliberately simple and deterministic: a cue (not, no, never, n't, without, ...) governs the
first content word after it, skipping auxiliaries and fillers ("has not yet been activated"
-> ``activat``). Words are compared by a crude stem so that "arrive" and "arrived" meet.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")
_CUES = frozenset({"not", "no", "never", "without", "nor", "none", "nothing", "nobody", "neither",
                   "cannot", "cant", "dont", "didnt", "doesnt", "isnt", "wasnt", "werent", "arent",
                   "havent", "hasnt", "hadnt", "wont", "wouldnt", "couldnt", "shouldnt", "aint"})
# Words that negate what follows ("failed to arrive", "stopped working") and are themselves
# content: "did not fail" negates ``fail``.
_NEGATIVE_VERBS = frozenset({"unable", "trouble", "fail", "fails", "failed", "failing", "stop", "stops",
                             "stopped", "refuse", "refuses", "refused"})
# Words a cue reaches across to the word it governs, and words never compared.
_SKIP = frozenset({
    "a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that", "these",
    "those", "any", "some", "yet", "still", "even", "ever", "really", "actually", "been", "be",
    "being", "is", "am", "are", "was", "were", "have", "has", "had", "do", "does", "did", "to",
    "able", "quite", "at", "all", "so", "very", "me",
    "i", "you", "we", "they", "it", "he", "she", "us", "them", "of", "for", "on", "in", "and", "or",
    "but", "if", "with", "by", "from", "as", "can", "could", "will", "would", "should", "shall",
    "may", "might", "must", "why", "what", "when", "where", "how", "who", "which", "there", "here",
    "just", "please", "too", "also", "again", "now", "then", "than", "up", "out", "about", "into",
    "yes", "ok", "okay", "hi", "hello", "thanks", "thank", "s", "t", "m", "re", "ve", "ll", "d",
    "longer", "more", "anymore",
})
# Negative words that mean "not <word>": "the rate is wrong" says the rate is not correct.
_ANTONYMS = {"incorrect": "correct", "wrong": "correct", "unrecognised": "recognis", "unrecognized": "recognis",
             "unknown": "know", "unauthorised": "authoris", "unauthorized": "authoris", "unchanged": "chang",
             "missing": "show"}
# After a cue, these open a subject ("hasn't my balance updated"): the verb after it is negated.
_DETERMINERS = frozenset({"my", "your", "our", "their", "his", "her", "its", "the", "this", "that"})
_CLAUSE_END = re.compile(r"[.,;:!?]|\b(?:but|because|although|though|however|and then)\b")
_SUFFIXES = ("ations", "ation", "ings", "ing", "edly", "ed", "es", "s", "e")


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _tokens(clause: str) -> list[str]:
    words: list[str] = []
    for raw in _TOKEN.findall(clause):
        if raw.endswith("n't"):
            head = raw[:-3]  # didn't -> did not; can't, won't -> not
            words.extend([head, "not"] if head not in ("ca", "wo") else ["not"])
        else:
            words.append(raw.replace("'", ""))
    return words


@dataclass(frozen=True, slots=True)
class Polarity:
    """The stems a text negates and the stems it states plainly."""

    negated: frozenset[str]
    affirmed: frozenset[str]

    @property
    def negative(self) -> bool:
        return bool(self.negated)

    def contradicts(self, others: Sequence[Polarity]) -> bool:
        """This query reverses what ``others`` (the entries supporting a hit) mostly say.

        For a word the query negates (or affirms), the entries that use the word say the
        opposite at least twice as often as they agree. Entries that do not use the word have
        no say, so "my card is not working" is not contradicted by "how do I activate my card";
        real phrasing is mixed ("my card won't work", "help me get my card working"), hence
        a clear majority rather than any single entry.
        """
        for word in self.negated - self.affirmed:
            opposite = sum(word in o.affirmed and word not in o.negated for o in others)
            if opposite and opposite >= 2 * sum(word in o.negated for o in others):
                return True
        for word in self.affirmed - self.negated:
            opposite = sum(word in o.negated and word not in o.affirmed for o in others)
            if opposite and opposite >= 2 * sum(word in o.affirmed for o in others):
                return True
        return False


@functools.lru_cache(maxsize=65_536)
def polarity(text: str) -> Polarity:
    negated: set[str] = set()
    affirmed: set[str] = set()
    for clause in _CLAUSE_END.split(text.lower().replace("\u2019", "'")):
        pending = extend = subject = governs_object = False
        for word in _tokens(clause or ""):
            if word in _CUES:
                pending = True
                # "without my card": the noun after the determiner is what is absent
                governs_object = word == "without"
                continue
            if word in _ANTONYMS:  # "not missing" is "showing"
                (affirmed if pending else negated).add(_ANTONYMS[word])
                pending = False
                continue
            if pending and word in _DETERMINERS:
                subject = not governs_object
                continue
            if pending and subject and word not in _SKIP:  # the subject noun: stated, not negated
                affirmed.add(stem(word))
                subject = False
                continue
            if word == "to" and extend:  # "can't get my card to work": ``work`` is negated too
                pending, extend = True, False
                continue
            if word in _SKIP:
                continue
            if word in _NEGATIVE_VERBS:
                (negated if pending else affirmed).add(stem(word))
                pending, extend = not pending, False
                continue
            if pending:
                negated.add(stem(word))
                pending, extend = False, True
            else:
                affirmed.add(stem(word))
    return Polarity(frozenset(negated), frozenset(affirmed))

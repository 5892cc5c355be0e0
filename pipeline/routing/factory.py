"""Build the router's parts from the settings: rules, the tools they name, the classifier."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.adapters.sql_bank import SqlBank
from pipeline.cache.embedder import Embedder
from pipeline.cache.labelled import read_labelled
from pipeline.cache.policy import HitPolicy
from pipeline.cache.semantic_cache import PolicyBook
from pipeline.datasets import LabelledQuery, banking77_split
from pipeline.routing.classifier import IntentClassifier
from pipeline.routing.engine import RouteEngine
from pipeline.routing.rulebook import RuleBook
from pipeline.settings import Settings
from pipeline.tools.banking import tool_specs
from pipeline.tools.registry import ToolRegistry

BANKING77_RULES = Path(__file__).resolve().parent / "banking77_rules.yaml"


def build_bank(settings: Settings) -> SqlBank:
    return SqlBank(settings.tools_database())


def build_rulebook(settings: Settings, tools: ToolRegistry) -> RuleBook:
    return RuleBook.load(settings.router_rules_file or BANKING77_RULES, tools)


def router_examples(settings: Settings) -> list[LabelledQuery]:
    """The classifier's labelled examples: the configured CSV, else banking77's tune part
    (the held-out part stays unseen, so that `route eval` on it measures generalisation)."""
    if settings.router_examples is not None:
        return read_labelled(settings.router_examples)
    tune, _ = banking77_split()
    return tune


#: The classifier's abstain policy (calibrated for the router in issue 4: precision 0.998 on the
#: held-out part at its deflection rate). Not the cache's: the cache's bar is set for open-set
#: safety, and uses this classifier as its second opinion.
ROUTER_POLICY = HitPolicy(k=30, temperature=0.05, min_similarity=0.70, min_share=0.85, min_agree=2, margin=0.03)


def router_policy(settings: Settings) -> HitPolicy:
    return PolicyBook.load(settings.router_policy_file).default if settings.router_policy_file else ROUTER_POLICY


def build_classifier(settings: Settings, embedder: Embedder,
                     examples: Sequence[LabelledQuery] | None = None) -> IntentClassifier:
    """The configured classifier (``examples``: other labelled examples than the configured ones)."""
    return IntentClassifier.fit(embedder, router_examples(settings) if examples is None else examples,
                                router_policy(settings),
                                cache_dir=settings.state_dir / "models",
                                shortlist=settings.router_shortlist, linear_c=settings.router_linear_c or None)


def build_engine(settings: Settings, embedder: Embedder, tools: ToolRegistry | None = None) -> RouteEngine:
    """The engine alone (for `route explain` and `route eval`): the rules are checked against
    the tools' specs, no database is opened."""
    if tools is None:
        tools = tool_specs()
    return RouteEngine(build_rulebook(settings, tools), build_classifier(settings, embedder))

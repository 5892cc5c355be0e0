"""bench/cache_tradeoff.py's variants and verdicts: a variant's JSON overrides the default
policy (or names the audit's tightening), and a variant meets issue 11's targets only when
every one of them holds, the hit rate counted over CLINC's 4,500 : 1,000 mix."""

from __future__ import annotations

import argparse

import pytest

from bench.cache_tradeoff import policy_for, summary, variant
from pipeline.cache.policy import HitPolicy, tightened
from pipeline.errors import ConfigurationError


def test_a_variant_overrides_the_default_policy_or_names_a_tightening() -> None:
    assert variant("strict=" + '{"router_probability": 0.95}') == ("strict", '{"router_probability": 0.95}')
    with pytest.raises(argparse.ArgumentTypeError):
        variant("no separator")
    base = HitPolicy()
    strict = policy_for('{"router_probability": 0.95}', base)
    assert strict.router_probability == 0.95 and strict.min_similarity == base.min_similarity
    assert policy_for("tight2", base) == tightened(base, 2)
    with pytest.raises(ConfigurationError):
        policy_for('{"no_such_setting": 1}', base)
    with pytest.raises(SystemExit):
        policy_for("not json", base)


def row(hit: float, precision: float, oos: float) -> dict[str, object]:
    return {"in_scope_hit_rate": hit, "precision": precision, "precision_ci95": [precision - 0.01, precision],
            "out_of_scope_hit_rate": oos, "out_of_scope_ci95": [0.0, oos * 2],
            "out_of_scope_distinct_answered": ["a", "b"]}


def test_all_met_needs_every_target() -> None:
    mix = 4500 / 5500
    met = summary("ok", HitPolicy(), row(0.62, 0.995, 0.004), row(0.66, 0.991, 0.0), 1000, mix)
    assert met["all_met"] and met["mix_hit_rate"] == pytest.approx(0.62 * mix, abs=1e-4)
    # 0.637 in scope is 0.521 over the mix: met; out of scope 0.72 %: not
    over = summary("default", HitPolicy(), row(0.637, 0.9967, 0.0072), row(0.678, 0.9948, 0.0), 1000, mix)
    assert over["met"] == {"reference_hit": True, "reference_precision": True, "mix_hit": True, "precision": True,
                           "out_of_scope": False} and not over["all_met"]
    strict = summary("strict", HitPolicy(), row(0.549, 0.9975, 0.004), row(0.585, 0.9957, 0.0), 1000, mix)
    assert strict["met"]["out_of_scope"] and not strict["met"]["reference_hit"] and not strict["met"]["mix_hit"]

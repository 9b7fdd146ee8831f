"""proteus_models in the live system, the parts without a stack: a worker's variant bookkeeping, the variants
on the emulated workers' clock, and the policy object the live cluster view and routing read."""

from __future__ import annotations

import pytest

from scheduler.model_variants import VARIANTS, VariantSlot, configured, held_variant_profile, variant_profile
from scheduler.policies import LIVE_POLICY_NAMES, MODEL_VARIANT_POLICIES, make_policy
from tests.sim_helpers import cfg


def test_a_worker_starts_on_variant_0_and_pays_the_load_only_on_a_switch():
    slot = VariantSlot()
    assert slot.held == 0 and slot.wait_s(100.0) == 0.0  # the initial plan's model, loaded before serving
    assert not slot.switch_to(0, 47.0, 100.0) and slot.wait_s(100.0) == 0.0
    assert slot.switch_to(3, 21.7, 100.0)
    assert slot.held == 3 and slot.wait_s(100.0) == pytest.approx(21.7) and slot.wait_s(110.0) == pytest.approx(11.7)
    # Switched again during that load: the next load starts when this one ends.
    assert slot.switch_to(4, 12.0, 110.0)
    assert slot.wait_s(110.0) == pytest.approx(11.7 + 12.0)
    assert slot.wait_s(200.0) == 0.0 and not slot.switch_to(4, 12.0, 200.0)


def test_load_seconds_wait_for_the_next_batch_record():
    """A load paid on a message whose row another batch already served is recorded on the next batch."""
    slot = VariantSlot()
    slot.unrecorded_load_s += 2.35  # the load, on a message that then claimed nothing
    slot.unrecorded_load_s += 0.6  # another switch before any batch ran
    assert slot.take_unrecorded_load() == pytest.approx(2.95)
    assert slot.take_unrecorded_load() == 0.0  # recorded once


def test_configured_variants_scale_latency_and_load_time_by_the_time_factor():
    base, fast = configured(), configured(time_factor=0.1)
    assert [v.name for v in fast] == [v.name for v in base]
    for a, b in zip(base, fast):
        assert b.load_s == pytest.approx(a.load_s * 0.1) and b.quality == a.quality
        assert all(b.batch_ms[k] == pytest.approx(a.batch_ms[k] * 0.1) for k in a.batch_ms)
    assert configured(time_factor=1.0) == base


def test_a_held_variant_sleeps_the_row_the_controller_planned_with():
    variants = configured(time_factor=0.5)
    profile = variant_profile(variants)
    for i, v in enumerate(variants):
        held = held_variant_profile(profile, i, v.name)
        assert held.levels == (0,)
        assert [held.latency(0, b) for b in (1, 2, 3, 16)] == [profile.latency(i, b) for b in (1, 2, 3, 16)]


def test_the_live_policy_object_sees_variants_in_its_config():
    """The live cluster view and admission read policy.config.profile and policy.caps: for proteus_models those
    are the variants' (in the live clock), and the quality of a decision is its variant's."""
    assert "proteus_models" in LIVE_POLICY_NAMES and "proteus_models" in MODEL_VARIANT_POLICIES
    config = cfg(4, variant_time_factor=0.01)
    pol = make_policy("proteus_models", config)
    assert pol.config.profile is pol.variant_profile and pol.levels == list(range(len(VARIANTS)))
    assert pol.config.profile.latency(0, 1) == pytest.approx(6.1 * 0.01)
    assert pol.load_s[0] == pytest.approx(47.0 * 0.01)
    assert pol.caps == pol.variant_profile.batch_caps(config.slo_s)
    assert [pol.quality(None, k) for k in pol.levels] == pol.variant_quality_of
    assert config.profile.levels != pol.config.profile.levels  # the caller's config is left as it was

"""Checks of the V constraint shared by the shallow and the deep learners' tests."""

import math


def on_v_boundary(h, zeta, gamma):
    return math.isclose(h["v_min"], zeta, rel_tol=1e-5) or math.isclose(h["v_ratio"], gamma, rel_tol=1e-5)


def assert_counts_binding_steps(history, zeta, gamma):
    """v_projected_steps grows by one exactly at the steps after which v lies on the boundary of V: P_V leaves a
    moved v on the boundary, and a gradient step that stays inside V leaves it inside (almost surely)."""
    counts = [h["v_projected_steps"] for h in history]
    assert counts[0] == 0
    for prev, h in zip(history[:-1], history[1:], strict=True):
        assert h["step"] == prev["step"] + 1
        assert h["v_projected_steps"] - prev["v_projected_steps"] == on_v_boundary(h, zeta, gamma), h["step"]
    assert 0 < counts[-1] < history[-1]["step"]  # the test needs steps that bind and steps that do not

"""The fuzz campaign at ``make test`` size: 10,000 seeded mutants of real recordings per decoder
(bounded by time on a slow machine), no crash, no fast/exact disagreement. ``make fuzz`` runs
the same campaign ten times larger (tests/fuzz/campaign.py)."""

from __future__ import annotations

import io

import pytest

from candlewax.codec import REASONS
from tests.fuzz.campaign import NOTES, print_report, run_target, targets

CASES = 10_000
#: Per decoder, at most: enough for 10,000 cases on CI's 2 cores, a bound if the machine crawls.
SECONDS = 90.0


@pytest.mark.parametrize("target", targets(), ids=lambda t: t.name)
def test_every_decoder_survives_its_mutants(target: object) -> None:
    report = run_target(target, CASES, SECONDS, seed=20261201)  # type: ignore[arg-type]
    out = io.StringIO()
    print_report([report], out)
    print(out.getvalue())
    assert not report.crashes, out.getvalue()
    assert not report.disagreements, out.getvalue()
    assert report.cases >= min(CASES, 2_000), out.getvalue()  # the time bound is a backstop
    # The mutants exercise both sides: some are still valid, most are rejected for a reason.
    assert report.accepted > 0 and sum(report.rejections.values()) > 0, out.getvalue()
    assert set(report.rejections) <= set(REASONS)
    if report.name == "trades":  # the fast path itself took part
        assert NOTES["trades: read by the fast path"] > CASES // 20

"""How fast the system notices a lost request, derived from the SLO (issue 11, item 1).

A queued row expires 2 × SLO after it arrived. For a crash to be repaired in time, the time to *detect*
it (a running row's lease runs out, then the next reconciler pass sees that) plus the time to run the
request again must fit in that window. So the timings are fractions of the SLO, not fixed seconds:

    detection   D = SLO / 4                        worst case from a worker's death to its rows requeued
    lease       = D / 2                            renewed every lease / 3 by the worker (heartbeat)
    reconcile   = ⌊D / 2⌋ whole seconds            the reconciler's period (beat counts whole seconds)
    republish   = reconcile                        a queued row with no message in its queue is sent again
                                                   at the first pass that sees it missing
    recovery    = D + reconcile + longest batch    detection, a republish pass, one more run

Each is at least `floor_s` (1 s) so that a tiny SLO does not turn the reconciler into a busy loop.
A configuration is *recoverable* when recovery ≤ 2 × SLO (the expiry): otherwise a crash would always
end in `expired`, and the admin refuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DETECTION_FRACTION = 0.25  # of the SLO
EXPIRY_SLO_MULTIPLE = 2.0  # a queued row expires this many SLOs after arrival
FLOOR_S = 1.0


@dataclass(frozen=True)
class RecoveryTimings:
    slo_s: float
    longest_batch_s: float
    lease_s: float
    heartbeat_s: float
    reconcile_s: float
    republish_s: float

    @property
    def detection_s(self) -> float:
        """Worst case from a worker's last renewal to its rows being requeued."""
        return self.lease_s + self.reconcile_s

    @property
    def recovery_s(self) -> float:
        """Worst case from a crash to the request finished on another worker."""
        return self.detection_s + self.republish_s + self.longest_batch_s

    @property
    def expiry_s(self) -> float:
        return EXPIRY_SLO_MULTIPLE * self.slo_s

    @property
    def recoverable(self) -> bool:
        return self.recovery_s <= self.expiry_s

    def problem(self) -> str | None:
        """Why a crash could not be repaired before the request expires, or None."""
        if self.recoverable:
            return None
        return (
            f"Recovery from a worker crash takes up to {self.recovery_s:.1f} s (detection {self.detection_s:.1f} s "
            f"+ republish {self.republish_s:.1f} s + the longest batch {self.longest_batch_s:.1f} s), longer than "
            f"the {self.expiry_s:.1f} s (2 × SLO) after which a queued request expires: raise the SLO or lower the "
            f"batch sizes."
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "slo_s": self.slo_s,
            "lease_s": self.lease_s,
            "heartbeat_s": self.heartbeat_s,
            "reconcile_s": self.reconcile_s,
            "republish_s": self.republish_s,
            "detection_s": self.detection_s,
            "longest_batch_s": self.longest_batch_s,
            "recovery_s": self.recovery_s,
            "expiry_s": self.expiry_s,
        }


def recovery_timings(slo_s: float, longest_batch_s: float, floor_s: float = FLOOR_S) -> RecoveryTimings:
    """The timings of the module docstring for an SLO and the profile's longest batch (both seconds)."""
    if slo_s <= 0:
        raise ValueError(f"the SLO must be positive, got {slo_s}")
    half_detection = max(floor_s, DETECTION_FRACTION * slo_s / 2)
    return RecoveryTimings(
        slo_s=slo_s,
        longest_batch_s=max(0.0, longest_batch_s),
        lease_s=half_detection,
        heartbeat_s=half_detection / 3,
        reconcile_s=max(floor_s, float(math.floor(half_detection))),
        republish_s=half_detection,
    )

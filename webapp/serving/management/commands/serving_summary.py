from django.conf import settings
from django.core.management.base import BaseCommand

from webapp.ledger.models import ServingConfig
from webapp.serving.live_config import profile_source, recovery_for


class Command(BaseCommand):
    help = "Print the effective serving configuration (what the admin's row and the environment say)."

    def handle(self, *args, **kw):
        c = ServingConfig.current()
        layout = f", manual K layout {c.manual_layout}" if c.layout_list else ""
        self.stdout.write(
            f"serving: policy={c.policy}, SLO={c.slo_seconds:g} s, workers={settings.T2I_WORKERS}, "
            f"engine={settings.T2I_ENGINE} (time factor {settings.T2I_TIME_FACTOR:g}), "
            f"profile={profile_source()}{layout}, admission={c.admission}\n"
            f"recovery: {_recovery_line(c)}\n"
            f"(edit in the admin: Serving configuration; the SLO above comes from the database row "
            f"once it exists)"
        )


def _recovery_line(config: ServingConfig) -> str:
    t = recovery_for(config)
    line = (
        f"lease {t.lease_s:.2f} s, heartbeat {t.heartbeat_s:.2f} s, reconcile every {t.reconcile_s:g} s, "
        f"detection ≤ {t.detection_s:.2f} s, recovery ≤ {t.recovery_s:.1f} s of the {t.expiry_s:.1f} s expiry"
    )
    return line if t.recoverable else line + " — NOT RECOVERABLE: " + t.problem()

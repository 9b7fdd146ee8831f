from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from webapp.ledger.models import POLICY_CHOICES, CacheScope, ServingConfig


class Command(BaseCommand):
    help = "Set fields of the serving configuration from the command line (validated like the admin)."

    def add_arguments(self, parser):
        parser.add_argument("--slo", type=float, help="SLO of interactive requests, in seconds")
        parser.add_argument("--batch-slo", type=float, help="SLO of batch requests, in seconds")
        parser.add_argument("--policy", choices=[c for c, _ in POLICY_CHOICES])
        parser.add_argument("--layout", help="manual K layout, e.g. 0,0,25,25 ('' to clear)")
        parser.add_argument("--max-in-flight", type=int, help="per-user cap (0 = none)")
        parser.add_argument("--cache-scope", choices=CacheScope.values, help="whose cache entries a request may reuse")

    def handle(self, *args, slo, batch_slo, policy, layout, max_in_flight, cache_scope, **kw):
        config = ServingConfig.current()
        changes = {
            "slo_seconds": slo,
            "batch_slo_seconds": batch_slo,
            "policy": policy,
            "manual_layout": layout,
            "max_in_flight": max_in_flight,
            "cache_scope": cache_scope,
        }
        for field, value in changes.items():
            if value is not None:
                setattr(config, field, value)
        try:
            config.full_clean()
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
        config.save()
        self.stdout.write(f"serving configuration updated: { {k: v for k, v in changes.items() if v is not None} }")

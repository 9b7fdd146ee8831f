"""Operator's SLO dashboard (staff-only pages, server-side PNG charts) and the Prometheus
/metrics exporter. Every number comes from `metrics_queries`, which aggregates in Postgres."""

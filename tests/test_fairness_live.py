"""Per-user fairness and priority classes in the live system (issue 13 item 7): the round-robin claim
order on real PostgreSQL, the `priority` field of the API and its deadline, the batch SLO in the admin.

Claims run on rows routed to UNSERVED_SLOT, which no test worker consumes. The broker is stood in for
by a list: `publishing.publish` appends the message it would send, so a test can play the worker's
queue by hand (the one stand-in here; the database is real)."""

from __future__ import annotations

import importlib
from collections import deque
from datetime import timedelta

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone

from tests.helpers import UNSERVED_SLOT, make_request, serving_config, serving_config_admin_form
from webapp.ledger import publishing
from webapp.ledger.models import BATCH_USERS_GROUP, GenerationRequest, Priority, ServingConfig, Status
from webapp.serving.recovery import reconcile_now as reconcile

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations/"


@pytest.fixture
def broker(monkeypatch):
    """The messages claim_for_message sends (row ids, in order), instead of Redis."""
    sent: deque = deque()
    monkeypatch.setattr(publishing, "publish", lambda request_id, worker: sent.append(request_id) or True)
    return sent


def queued_rows(owner, n, **fields):
    return [make_request(owner, prompt=f"{owner.username} {i}", k_served=0, **fields) for i in range(n)]


def drain(messages: deque, broker: deque, capture) -> list[list]:
    """Deliver messages one at a time, as the worker's queue does (new messages join the tail), until
    none is left; returns each non-empty claim (rows in claim order)."""
    claims = []
    while messages or broker:
        messages.extend(broker)
        broker.clear()
        message = messages.popleft()
        with capture(execute=True):  # the republish runs on commit
            ids = publishing.claim_for_message(message, 0, 30)
        if ids:
            rows = GenerationRequest.objects.in_bulk(ids)
            claims.append([rows[i] for i in ids])
    return claims


def test_claims_take_turns_across_owners(user, other_user, broker, django_capture_on_commit_callbacks):
    """A queues 10, then B queues 2, one row per batch: A, B, A, B, then the rest of A; every row
    exactly once, with every message either claiming or doing nothing."""
    a_rows = queued_rows(user, 10, batch_limit=1)
    b_rows = queued_rows(other_user, 2, batch_limit=1)
    messages = deque(r.id for r in a_rows + b_rows)
    claims = drain(messages, broker, django_capture_on_commit_callbacks)
    assert all(len(c) == 1 for c in claims)
    order = [c[0] for c in claims]
    assert [r.owner.username for r in order] == ["alice", "bob"] * 2 + ["alice"] * 8
    assert [r.id for r in order if r.owner == user] == [r.id for r in a_rows]  # each owner's oldest first
    assert GenerationRequest.objects.filter(status=Status.RUNNING).count() == 12


def test_a_batch_interleaves_owners(user, other_user, broker, django_capture_on_commit_callbacks):
    a_rows = queued_rows(user, 6, batch_limit=4)
    b_rows = queued_rows(other_user, 2, batch_limit=4)
    messages = deque(r.id for r in a_rows + b_rows)
    claims = drain(messages, broker, django_capture_on_commit_callbacks)
    assert [[r.id for r in c] for c in claims] == [
        [a_rows[0].id, b_rows[0].id, a_rows[1].id, b_rows[1].id],
        [r.id for r in a_rows[2:]],
    ]


def test_passed_over_row_gets_a_new_message_and_claimed_rows_none(
    user, other_user, broker, django_capture_on_commit_callbacks
):
    """The message of A's second row runs B's row (B never served): A's row is sent again once the
    claim commits; B's own message, delivered later, is a no-op and sends nothing."""
    first, second = queued_rows(user, 2, batch_limit=1)
    (b_row,) = queued_rows(other_user, 1, batch_limit=1)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert publishing.claim_for_message(first.id, 0, 30) == [first.id]
    assert callbacks == [] and not broker
    with django_capture_on_commit_callbacks() as callbacks:
        assert publishing.claim_for_message(second.id, 0, 30) == [b_row.id]
    assert not broker  # not before the commit: the row is still locked by the claim until then
    (send,) = callbacks
    send()
    assert list(broker) == [second.id]
    assert GenerationRequest.objects.get(pk=second.pk).status == Status.QUEUED
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert publishing.claim_for_message(b_row.id, 0, 30) == []
    assert callbacks == [] and list(broker) == [second.id]


def test_claims_stay_within_the_batch_group(user, other_user, broker, django_capture_on_commit_callbacks):
    """Fairness never mixes groups: B's rows at another K′ or size are not taken by A's message."""
    (a_row,) = queued_rows(user, 1, batch_limit=4)
    make_request(other_user, k_served=25, batch_limit=4)
    make_request(other_user, k_served=0, width=128, batch_limit=4)
    with django_capture_on_commit_callbacks(execute=True):
        assert publishing.claim_for_message(a_row.id, 0, 30) == [a_row.id]
    assert GenerationRequest.objects.filter(owner=other_user, status=Status.QUEUED).count() == 2


def test_recently_served_owner_waits(user, other_user, broker, django_capture_on_commit_callbacks):
    """B ran something a minute ago, A ten minutes ago: A's row goes first even though B's is older."""
    now = timezone.now()
    make_request(user, status=Status.SUCCEEDED, started_at=now - timedelta(minutes=10), finished_at=now)
    make_request(other_user, status=Status.SUCCEEDED, started_at=now - timedelta(minutes=1), finished_at=now)
    (b_row,) = queued_rows(other_user, 1, batch_limit=1)
    (a_row,) = queued_rows(user, 1, batch_limit=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert publishing.claim_for_message(b_row.id, 0, 30) == [a_row.id]
    assert list(broker) == [b_row.id]


def test_interactive_rows_go_before_batch_rows(user, other_user, broker, django_capture_on_commit_callbacks):
    """A's batch rows came first; B's interactive row is claimed before them, also by their messages;
    in a shared batch interactive rows lead."""
    a_batch = queued_rows(user, 3, batch_limit=1, priority=Priority.BATCH)
    (b_inter,) = queued_rows(other_user, 1, batch_limit=1)
    messages = deque(r.id for r in a_batch + [b_inter])
    claims = drain(messages, broker, django_capture_on_commit_callbacks)
    assert [c[0].id for c in claims] == [b_inter.id] + [r.id for r in a_batch]

    late_batch = queued_rows(other_user, 2, batch_limit=3, priority=Priority.BATCH)
    (late_inter,) = queued_rows(user, 1, batch_limit=3)
    with django_capture_on_commit_callbacks(execute=True):
        ids = publishing.claim_for_message(late_batch[0].id, 0, 30)
    assert ids == [late_inter.id, late_batch[0].id, late_batch[1].id]


# ---- priority classes: API, deadline, defaults, admin ----


def test_priority_field_sets_class_and_deadline(api, embedded_services):
    config = serving_config(slo_seconds=20, batch_slo_seconds=500)
    for priority, slo in [("interactive", 20), ("batch", 500)]:
        resp = api.post(URL, {"prompt": f"a {priority} fox", "priority": priority}, format="json")
        assert resp.status_code == 202, resp.content
        body = resp.json()
        assert body["priority"] == priority
        row = GenerationRequest.objects.get(pk=body["id"])
        assert row.priority == priority
        assert (row.deadline - row.created_at).total_seconds() == pytest.approx(slo, abs=1e-3)
        assert config.slo_for(priority) == slo
    assert api.get(URL + body["id"] + "/").json()["priority"] == "batch"


def test_priority_defaults_to_interactive(api, embedded_services):
    body = api.post(URL, {"prompt": "no class named"}, format="json").json()
    assert body["priority"] == "interactive"
    assert api.post(URL, {"prompt": "null class", "priority": None}, format="json").json()["priority"] == "interactive"


@pytest.mark.parametrize("value", ["urgent", "BATCH", 3])
def test_unknown_priority_is_400_with_a_message(api, embedded_services, value):
    resp = api.post(URL, {"prompt": "ok", "priority": value}, format="json")
    assert resp.status_code == 400, resp.content
    message = " ".join(resp.json()["priority"])
    assert "Unknown priority" in message and "interactive, batch" in message
    assert GenerationRequest.objects.count() == 0


def test_batch_users_group_defaults_to_batch(api, user, embedded_services):
    # The group comes from migration 0008. A transactional test that ran earlier in this process may have flushed the
    # tables, and the migration's row with them, so run its data step again here.
    batch_users_migration = importlib.import_module("webapp.ledger.migrations.0008_batch_users_group")
    batch_users_migration.forwards(django_apps, None)
    serving_config(slo_seconds=20, batch_slo_seconds=400)
    user.groups.add(Group.objects.get(name=BATCH_USERS_GROUP))
    body = api.post(URL, {"prompt": "overnight job"}, format="json").json()
    row = GenerationRequest.objects.get(pk=body["id"])
    assert body["priority"] == row.priority == "batch"
    assert (row.deadline - row.created_at).total_seconds() == pytest.approx(400, abs=1e-3)
    # A request may still ask for interactive.
    assert api.post(URL, {"prompt": "now please", "priority": "interactive"}, format="json").json()["priority"] == (
        "interactive"
    )


def test_web_form_and_request_page_show_priority(client, user, embedded_services):
    client.force_login(user)
    resp = client.post("/", {"prompt": "a batch cat", "priority": "batch"})
    assert resp.status_code == 302, resp.content
    row = GenerationRequest.objects.get(owner=user)
    assert row.priority == "batch"
    page = client.get(resp["Location"]).content.decode()
    assert '<dd id="priority">batch</dd>' in page


def test_batch_slo_must_not_be_below_the_interactive_slo(embedded_services):
    with pytest.raises(ValidationError) as err:
        serving_config(slo_seconds=30, batch_slo_seconds=10)
    assert "at least the interactive SLO" in " ".join(err.value.message_dict["batch_slo_seconds"])
    with pytest.raises(ValidationError):
        serving_config(slo_seconds=30, batch_slo_seconds=0)


def test_admin_form_validates_the_batch_slo(client, django_user_model, embedded_services):
    url, data = serving_config_admin_form(client, django_user_model)
    data.update(slo_seconds=15, batch_slo_seconds=5)
    resp = client.post(url, data)
    assert resp.status_code == 200 and b"at least the interactive SLO" in resp.content
    data["batch_slo_seconds"] = 900
    assert client.post(url, data).status_code == 302
    assert ServingConfig.current().batch_slo_seconds == 900


def test_admin_lists_and_filters_by_priority(client, user, django_user_model, embedded_services):
    admin = django_user_model.objects.create_superuser("root", "r@x.invalid", "pw-root-123")
    client.force_login(admin)
    batch_row = make_request(user, priority=Priority.BATCH, prompt="batch row")
    make_request(user, prompt="interactive row")
    resp = client.get("/admin/ledger/generationrequest/", {"priority__exact": "batch"})
    assert resp.status_code == 200
    assert list(resp.context["cl"].result_list) == [batch_row]
    assert "By priority" in resp.content.decode()


def test_reconciler_expires_each_class_after_twice_its_slo(user, embedded_services):
    serving_config(slo_seconds=10, batch_slo_seconds=100)
    old = timezone.now() - timedelta(seconds=60)  # past 2 × 10 s, within 2 × 100 s
    interactive = make_request(user, created_at=old, worker=UNSERVED_SLOT)
    batch = make_request(user, created_at=old, priority=Priority.BATCH, worker=UNSERVED_SLOT)
    reconcile()
    assert GenerationRequest.objects.get(pk=interactive.pk).status == Status.EXPIRED
    assert GenerationRequest.objects.get(pk=batch.pk).status == Status.QUEUED

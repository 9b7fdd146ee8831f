import pytest
from tests.test_dashboard import ledger, manual_plan, staff  # noqa
pytestmark = pytest.mark.django_db(transaction=True)

def test_dump(client, ledger, manual_plan, staff):
    client.force_login(staff)
    for name in ("rates", "violations", "quality", "mix", "queues"):
        open(f"/tmp/dash_{name}.png", "wb").write(client.get(f"/dashboard/charts/{name}.png?window=15m").content)
    open("/tmp/dash.html", "w").write(client.get("/dashboard/?window=15m").content.decode())
    open("/tmp/metrics.txt", "w").write(client.get("/metrics").content.decode())

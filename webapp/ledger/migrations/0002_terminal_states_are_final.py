"""A database trigger so that no code path, present or future, can change a terminal status."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION ledger_terminal_states_are_final() RETURNS trigger AS $$
BEGIN
    IF OLD.status IN ('succeeded', 'failed', 'cancelled', 'expired') AND NEW.status <> OLD.status THEN
        RAISE EXCEPTION 'request % is % (terminal); cannot become %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_terminal_states_are_final
    BEFORE UPDATE OF status ON ledger_generationrequest
    FOR EACH ROW EXECUTE FUNCTION ledger_terminal_states_are_final();
"""

DROP = """
DROP TRIGGER IF EXISTS ledger_terminal_states_are_final ON ledger_generationrequest;
DROP FUNCTION IF EXISTS ledger_terminal_states_are_final();
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [migrations.RunSQL(CREATE, DROP)]

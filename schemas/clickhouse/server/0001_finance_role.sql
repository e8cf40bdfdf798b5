-- ClickHouse server deployments only (chDB has no access control): the read-only finance role.
-- Finance users get SELECT on the usage database and nothing else; the settings profile makes every
-- session read-only and bounds rows and time (they cannot change settings: readonly = 1).
CREATE ROLE IF NOT EXISTS lotabots_finance;
GRANT SELECT ON lotabots_usage.* TO lotabots_finance;
CREATE SETTINGS PROFILE IF NOT EXISTS lotabots_finance_profile
    SETTINGS readonly = 1, max_result_rows = 10000, result_overflow_mode = 'throw',
             max_execution_time = 10, max_memory_usage = 4000000000
    TO lotabots_finance;

import pytest

from jobprocessor.config import ConfigError, Settings, normalise_database_url

URL = "postgresql://u@127.0.0.1:5432/db"


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg2://u@h/db"])
def test_urls_are_normalised_to_psycopg2(url):
    assert normalise_database_url(url) == "postgresql+psycopg2://u@h/db"


def test_contract_defaults():
    s = Settings.from_env({"DATABASE_URL": URL})
    assert (s.DB_POOL_MAX, s.DB_POOL_MIN, s.JOBS_MAX_PER_RUN, s.JOBS_MAX_RUNTIME_S, s.JOBS_CONCURRENCY,
            s.JOBS_MAX_PER_STORE, s.JOBS_LEASE_S, s.JOBPROCESSOR_HANDLERS, s.CRON_SECRET) == \
        (30, 2, 10000, 90.0, 8, None, 60.0, (), "")
    assert (s.JOBS_MAX_IO_CONCURRENCY, s.JOBS_IDLE_GRACE_S, s.JOBS_MAX_TICKS_PER_PROCESS, s.JOBS_MAX_DEFERRALS,
            s.JOBS_MAX_DEFERRAL_S, s.JOBS_STUCK_HANDLER_S, s.JOBS_TICK_HISTORY_DAYS) == \
        (100, 5.0, 2, 100, 86400.0, 600.0, 7.0)


def test_values_are_read_from_the_environment():
    s = Settings.from_env({"DATABASE_URL": URL, "JOBS_MAX_PER_RUN": "25", "JOBS_MAX_PER_STORE": "20",
                           "JOBPROCESSOR_HANDLERS": " a.b , c ,", "JOBS_LEASE_S": "60"})
    assert (s.JOBS_MAX_PER_RUN, s.JOBS_MAX_PER_STORE, s.JOBPROCESSOR_HANDLERS, s.JOBS_LEASE_S) == \
        (25, 20, ("a.b", "c"), 60.0)


def test_the_rescue_limit_and_the_default_timeout_are_read_from_the_environment():
    assert (Settings.from_env({"DATABASE_URL": URL}).JOBS_RESCUE_LIMIT,
            Settings.from_env({"DATABASE_URL": URL}).JOBS_DEFAULT_TIMEOUT_S) == (1000, 30.0)  # the README's defaults
    s = Settings.from_env({"DATABASE_URL": URL, "JOBS_RESCUE_LIMIT": "2", "JOBS_DEFAULT_TIMEOUT_S": "2.5"})
    assert (s.JOBS_RESCUE_LIMIT, s.JOBS_DEFAULT_TIMEOUT_S) == (2, 2.5)


@pytest.mark.parametrize("name,value,words", [
    ("JOBS_MAX_PER_RUN", "ten", "JOBS_MAX_PER_RUN must be a whole number"),
    ("JOBS_MAX_PER_RUN", "0", "JOBS_MAX_PER_RUN must be between 1 and 1000000"),
    ("JOBS_LEASE_S", "2", "JOBS_LEASE_S must be between 5 and"),
    ("JOBS_MAX_RUNTIME_S", "-5", "JOBS_MAX_RUNTIME_S must be between"),
    ("JOBS_MAX_RUNTIME_S", "nan", "JOBS_MAX_RUNTIME_S must be a finite number"),
    ("JOBS_CONCURRENCY", "1.5", "JOBS_CONCURRENCY must be a whole number"),
    ("DB_POOL_MAX", "0", "DB_POOL_MAX must be between"),
    ("CRON_SECRET", "short", "CRON_SECRET must be at least 16 characters"),
    ("DATABASE_URL", "mysql://x", "DATABASE_URL must be a postgres"),
])
def test_bad_configuration_names_the_variable(name, value, words):
    with pytest.raises(ConfigError, match=words):
        Settings.from_env({"DATABASE_URL": URL, name: value})


def test_missing_database_url_is_explained():
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        Settings.from_env({})


def test_pool_min_above_max_is_refused():
    with pytest.raises(ConfigError, match="DB_POOL_MIN"):
        Settings.from_env({"DATABASE_URL": URL, "DB_POOL_MIN": "5", "DB_POOL_MAX": "3"})


def test_repr_never_shows_secrets():
    s = Settings.from_env({"DATABASE_URL": "postgresql://u:hunter2@h/db", "CRON_SECRET": "s3cret-s3cret-s3cret"})
    assert "hunter2" not in repr(s) and "s3cret" not in repr(s) and "s3cret" not in str(s)


def test_every_setting_is_documented():
    for name, _default, doc in Settings.documentation():
        assert doc, name


def test_unimportable_handler_module_stops_start_up():
    from jobprocessor import create_app

    with pytest.raises(ConfigError, match="JOBPROCESSOR_HANDLERS: cannot import 'no.such.module'"):
        create_app(Settings.from_env({"DATABASE_URL": URL, "JOBPROCESSOR_HANDLERS": "no.such.module"}))


def test_a_bad_log_level_names_the_variable():
    with pytest.raises(ConfigError, match="LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"):
        Settings.from_env({"DATABASE_URL": URL, "LOG_LEVEL": "VERBOSE"})
    assert Settings.from_env({"DATABASE_URL": URL, "LOG_LEVEL": " debug"}).LOG_LEVEL == "DEBUG"


@pytest.mark.parametrize("name", ["CRON_SECRET", "TRIGGER_HMAC_SECRET", "QSTASH_CURRENT_SIGNING_KEY"])
@pytest.mark.parametrize("value,words", [
    ("a-long-enough-secret-for-every-check-0123\n", "starts or ends with whitespace"),
    (" a-long-enough-secret-for-every-check-0123", "starts or ends with whitespace"),
    (" " * 40, "made of whitespace only"),
    ("a-long-enough-secret\x01for-every-check-0123", "printable ASCII"),
    ("a-long-enough-secret-för-every-check-0123", "printable ASCII"),
])
def test_secrets_a_header_cannot_carry_are_refused_naming_the_variable(name, value, words):
    environ = {"DATABASE_URL": URL, name: value}
    if name == "QSTASH_CURRENT_SIGNING_KEY":
        environ["TRIGGER_PUBLIC_URL"] = "https://jobs.example.com"
    with pytest.raises(ConfigError, match=f"^{name} .*{words}") as raised:
        Settings.from_env(environ)
    assert value.strip() not in str(raised.value) or not value.strip()


def test_a_token_budget_below_one_calls_output_cap_is_refused():
    # every call is charged at least its output cap, and a call charged more than a minute's budget is refused
    with pytest.raises(ConfigError, match=r"OPENAI_TPM \(1000\) must be at least OPENAI_MAX_OUTPUT_TOKENS \(4096\)"):
        Settings.from_env({"DATABASE_URL": URL, "OPENAI_TPM": "1000"})
    assert Settings.from_env({"DATABASE_URL": URL, "OPENAI_TPM": "1000", "OPENAI_MAX_OUTPUT_TOKENS": "1000"})

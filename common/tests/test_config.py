import pytest

from common_tasks.config import CommonSettings, ConfigError, WorkerSettings, load_settings
from common_tasks.redis_urls import parse_sentinel_url


def test_defaults_point_at_local_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_VISIBILITY_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(CommonSettings)
    assert settings.CELERY_BROKER_URL == "redis://localhost:6379/0"
    assert settings.CELERY_RESULT_BACKEND == "redis://localhost:6379/1"
    assert settings.CELERY_VISIBILITY_TIMEOUT == 3600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CELERY_VISIBILITY_TIMEOUT", "soon"),
        ("CELERY_VISIBILITY_TIMEOUT", "0"),
        ("CELERY_BROKER_URL", "amqp://guest@localhost//"),
        ("CELERY_RESULT_BACKEND", "localhost:6379"),
        ("LOG_LEVEL", "LOUD"),
        ("WORKER_CONCURRENCY", "-1"),
    ],
)
def test_bad_value_exits_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as exit_info:
        load_settings(WorkerSettings)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("configuration error: ")
    assert name in err
    assert "Value error" not in err


def test_each_bad_variable_gets_its_own_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest@localhost//")
    monkeypatch.setenv("WORKER_CONCURRENCY", "many")
    with pytest.raises(ConfigError):
        load_settings(WorkerSettings)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["CELERY_BROKER_URL", "WORKER_CONCURRENCY"]


SENTINELS = "sentinel://127.0.0.1:26379;sentinel://127.0.0.2:26379;sentinel://127.0.0.3"


def test_sentinel_urls_with_the_master_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", SENTINELS)
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "sentinel://:secret@127.0.0.1:26379/1;sentinel://127.0.0.2:26379/1")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "stack-master")
    settings = load_settings(CommonSettings)
    assert settings.REDIS_SENTINEL_MASTER == "stack-master"
    backend = parse_sentinel_url(settings.CELERY_RESULT_BACKEND)
    assert backend.addresses == (("127.0.0.1", 26379), ("127.0.0.2", 26379))
    assert (backend.db, backend.password) == (1, "secret")
    assert parse_sentinel_url(SENTINELS).addresses[2] == ("127.0.0.3", 26379)  # the default port


@pytest.mark.parametrize(
    ("env", "bad"),
    [
        ({"CELERY_BROKER_URL": SENTINELS}, ["CELERY_BROKER_URL"]),  # no REDIS_SENTINEL_MASTER
        (
            {"CELERY_BROKER_URL": SENTINELS, "CELERY_RESULT_BACKEND": SENTINELS + "/1"},
            ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"],
        ),
        ({"REDIS_SENTINEL_MASTER": "m", "CELERY_BROKER_URL": "sentinel://a:1;redis://b:2"}, ["CELERY_BROKER_URL"]),
        (
            {"REDIS_SENTINEL_MASTER": "m", "CELERY_BROKER_URL": "sentinel://a:1/0;sentinel://b:1/2"},
            ["CELERY_BROKER_URL"],
        ),
        ({"REDIS_SENTINEL_MASTER": "m", "CELERY_BROKER_URL": "sentinel://a:port"}, ["CELERY_BROKER_URL"]),
        ({"REDIS_SENTINEL_MASTER": "no spaces", "CELERY_BROKER_URL": SENTINELS}, ["REDIS_SENTINEL_MASTER"]),
    ],
)
def test_bad_sentinel_settings_one_line_each(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], bad: list[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError):
        load_settings(CommonSettings)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == bad


@pytest.mark.parametrize(("version", "supported"), [((5, 6, 2), False), ((5, 6, 3), True), ((5, 7, 0), False)])
def test_celery_outside_the_tested_releases_stops_the_service(
    capsys: pytest.CaptureFixture[str], version: tuple[int, int, int], supported: bool
) -> None:
    from common_tasks.celery_app import check_celery_version

    if supported:
        check_celery_version(version)
        return
    with pytest.raises(ConfigError):
        check_celery_version(version)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "celery" in err and "supports" in err


def test_the_installed_celery_is_supported() -> None:
    """Fails when the lock moves to a Celery release the recovery has not been tested with."""
    from common_tasks.celery_app import check_celery_version

    check_celery_version()


def test_time_limits_and_countdowns_fit_the_visibility_timeout() -> None:
    from common_tasks.celery_app import longest_countdown, task_time_limit

    for visibility_timeout in (1, 5, 30, 600, 3600, 86_400):
        assert task_time_limit(visibility_timeout) + longest_countdown(visibility_timeout) < visibility_timeout


def test_a_bad_sentinel_address_is_named_without_its_credentials() -> None:
    with pytest.raises(ValueError) as raised:
        parse_sentinel_url("sentinel://user:hunter2-secret@host:port/0")
    assert "hunter2" not in str(raised.value) and "***@host:port" in str(raised.value)

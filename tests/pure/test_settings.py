"""Settings from a Celery app's configuration: errors name each key as the user spelled it
(Django's ``CELERY_SUPERVISE_*`` or Flask's lowercase keys), and nothing falls back silently.
No Redis: reading settings connects nowhere."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from celery_supervise.errors import ConfigurationError
from celery_supervise.settings import DEFAULTS, NONE_ALLOWED, Settings, read_settings


def django(**settings: Any) -> Celery:
    """An app configured as Django does: ``CELERY_*`` names, ``namespace="CELERY"``."""
    holder = type("DjangoSettings", (), {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    for name, value in settings.items():
        setattr(holder, f"CELERY_{name.upper()}", value)
    app = Celery("dj", set_as_current=False)
    app.config_from_object(holder, namespace="CELERY")
    return app


def flask(**settings: Any) -> Celery:
    """An app configured as Flask does: lowercase keys of the ``CELERY`` dict."""
    app = Celery("fl", set_as_current=False)
    app.config_from_object({"broker_url": "redis://127.0.0.1:1/0", **settings})
    return app


def error(app: Celery) -> str:
    with pytest.raises(ConfigurationError) as info:
        read_settings(app)
    return str(info.value)


# -- keys named as written -----------------------------------------------------------------------


def test_nested_supervisor_errors_name_the_django_key() -> None:
    app = django(supervise_supervisors={"orders": {"intensity": -1}})
    assert error(app) == (
        "CELERY_SUPERVISE_SUPERVISORS['orders']['intensity']: must be an int >= 0, got -1"
    )


def test_nested_supervisor_errors_name_the_flask_key() -> None:
    app = flask(supervise_supervisors={"orders": {"backoff": {"factor": 0}}})
    assert error(app) == (
        "supervise_supervisors['orders']['backoff']['factor']: must be a number >= 1, got 0"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"supervise_supervisors": []}, "CELERY_SUPERVISE_SUPERVISORS: must be a dict of"),
        ({"supervise_supervisors": {"a b": {}}}, "CELERY_SUPERVISE_SUPERVISORS['a b']: a sup"),
        ({"supervise_supervisors": {"o": {"x": 1}}}, "CELERY_SUPERVISE_SUPERVISORS['o']: unkn"),
        ({"supervise_tick_interval": 0}, "CELERY_SUPERVISE_TICK_INTERVAL: must be a number > 0"),
        ({"supervise_lease_seconds": "5"}, "CELERY_SUPERVISE_LEASE_SECONDS: must be a number"),
        ({"supervise_dedup_window": 1.5}, "CELERY_SUPERVISE_DEDUP_WINDOW: must be an int >= 1"),
        ({"supervise_max_state_bytes": True}, "CELERY_SUPERVISE_MAX_STATE_BYTES: must be an int"),
        ({"supervise_key_prefix": "a b"}, "CELERY_SUPERVISE_KEY_PREFIX: must be a non-empty"),
        ({"supervise_redis_url": "http://x"}, "CELERY_SUPERVISE_REDIS_URL: must start with"),
        ({"supervise_tick_intervall": 1}, "CELERY_SUPERVISE_TICK_INTERVALL: unknown"),
    ],
)
def test_django_errors_name_the_key_as_written(settings: dict[str, Any], message: str) -> None:
    text = error(django(**settings))
    assert text.startswith(message), text
    assert "supervise_" not in text.replace("celery_supervise", "")  # never the inner name


def test_an_underived_redis_url_is_named_as_the_django_user_would_write_it() -> None:
    holder = type("DjangoSettings", (), {"CELERY_BROKER_URL": "amqp://guest@localhost//"})
    app = Celery("dj", set_as_current=False)
    app.config_from_object(holder, namespace="CELERY")
    assert error(app).startswith("CELERY_SUPERVISE_REDIS_URL: not set")
    amqp = Celery("plain", broker="amqp://guest@localhost//", set_as_current=False)
    assert error(amqp).startswith("supervise_redis_url: not set")


# -- nothing falls back silently -----------------------------------------------------------------

NON_NONE = sorted(set(DEFAULTS) - NONE_ALLOWED)


@pytest.mark.parametrize("name", NON_NONE)
def test_none_is_an_error_naming_the_key(name: str) -> None:
    assert error(django(**{name: None})) == (
        f"CELERY_{name.upper()}: must not be None; leave it out for the default "
        f"({DEFAULTS[name]!r})"
    )
    assert error(flask(**{name: None})).startswith(f"{name}: must not be None")


def test_none_redis_url_is_documented_and_derives_the_url() -> None:
    settings = read_settings(django(supervise_redis_url=None))
    assert settings.redis_url == "redis://127.0.0.1:1/0"


def test_an_empty_redis_url_is_an_error_not_the_derived_url() -> None:
    assert error(flask(supervise_redis_url="")).startswith(
        "supervise_redis_url: must start with redis://"
    )


def test_settings_left_out_take_their_defaults() -> None:
    settings = read_settings(flask())
    assert settings == Settings(redis_url="redis://127.0.0.1:1/0", tree=settings.tree)
    assert settings.tree.names() == ("root",)
    for name, default in DEFAULTS.items():
        if default is not None:
            assert getattr(settings, name.removeprefix("supervise_")) == default, name


def test_values_given_are_read_and_the_tree_is_parsed() -> None:
    settings = read_settings(
        django(
            supervise_tick_interval=2,
            supervise_key_prefix="shop",
            supervise_supervisors={"orders": {"strategy": "one_for_all", "children": ["t:1"]}},
        )
    )
    assert (settings.tick_interval, settings.key_prefix) == (2.0, "shop")
    assert settings.supervisors == {"orders": {"strategy": "one_for_all", "children": ["t:1"]}}
    assert settings.tree.spec("orders").strategy == "one_for_all"
    assert settings.tree.static_children("orders") == ("t:1",)


# -- supervise_redis_options -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "CELERY_SUPERVISE_REDIS_OPTIONS: must be a dict with str keys, got []"),
        ({1: 2}, "CELERY_SUPERVISE_REDIS_OPTIONS: must be a dict with str keys, got {1: 2}"),
        ({"ssl_ca_certs": "ca.pem"}, "CELERY_SUPERVISE_REDIS_OPTIONS: 'ssl_ca_certs' is not "
         "an option of redis-py's redis:// connection, got 'ssl_ca_certs'"),
        ({"socket_timout": 1}, "CELERY_SUPERVISE_REDIS_OPTIONS: 'socket_timout' is not an"),
        ({"retry": None}, "CELERY_SUPERVISE_REDIS_OPTIONS: 'retry' is set by celery_supervise"),
    ],
)
def test_bad_redis_options_name_the_key(options: Any, message: str) -> None:
    assert error(django(supervise_redis_options=options)).startswith(message)


def test_redis_options_are_read_for_the_urls_scheme() -> None:
    tls = {"ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "required", "password": "p"}
    settings = read_settings(flask(supervise_redis_url="rediss://h:1/0",
                                   supervise_redis_options=tls))
    assert settings.redis_options == tls
    unix = read_settings(flask(supervise_redis_url="unix:///tmp/r.sock",
                               supervise_redis_options={"socket_timeout": 3}))
    assert unix.redis_options == {"socket_timeout": 3}


def test_celerys_tls_options_are_taken_over_for_the_same_url() -> None:
    import ssl

    url = "rediss://h:1/0"
    app = flask(result_backend=url, redis_backend_use_ssl={
        "ssl_cert_reqs": "CERT_REQUIRED", "ssl_ca_certs": "/celery-ca.pem"})
    assert read_settings(app).redis_options == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/celery-ca.pem"}
    # the user's own options win, key by key
    app.conf.supervise_redis_options = {"ssl_ca_certs": "/mine.pem"}
    assert read_settings(app).redis_options["ssl_ca_certs"] == "/mine.pem"
    broker = flask(broker_url=url, broker_use_ssl={"ssl_ca_certs": "/b.pem"})
    assert read_settings(broker).redis_options == {"ssl_ca_certs": "/b.pem"}
    # another URL: Celery's options are for another server
    other = flask(supervise_redis_url="rediss://other:1/0", broker_url=url,
                  broker_use_ssl={"ssl_ca_certs": "/b.pem"})
    assert read_settings(other).redis_options == {}

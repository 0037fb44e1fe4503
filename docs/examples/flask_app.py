"""Flask: celery_supervise settings are lowercase keys of the ``CELERY`` config dict."""

from __future__ import annotations

# --8<-- [start:flask]
from celery import Celery
from flask import Flask

from celery_supervise import Supervision

flask_app = Flask(__name__)
flask_app.config["CELERY"] = {
    "broker_url": "redis://localhost:6379/0",
    "supervise_key_prefix": "shop",
    "supervise_dedup_window": 3600,
}
celery_app = Celery(flask_app.name, set_as_current=False)
celery_app.config_from_object(flask_app.config["CELERY"])
supervision = Supervision(celery_app)
# --8<-- [end:flask]

"""The ``conftest.py`` of a Django project's tests (here: the example project's site), as
docs/getting-started.md shows it. ``tests/docs/test_testing_recipe.py`` runs these tests."""

# --8<-- [start:conftest]
import os

import pytest

from celery_supervise import Supervision


@pytest.fixture(scope="session")
def celery_app(supervise_redis_url):
    """The project's Celery app, imported only once its settings name the test server:
    Celery reads the settings when the app is imported."""
    os.environ["EXAMPLE_REDIS_URL"] = supervise_redis_url  # what settings.py reads
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.django_site.settings")
    import django
    from django.test.utils import setup_test_environment

    django.setup()
    setup_test_environment()  # lets the test client's host in, as Django's runner does
    from example_project.django_site import celery_app

    return celery_app


@pytest.fixture
def runner(celery_app, supervise_runner):
    """Actor steps run in the test's process; state starts empty in every test."""
    celery_app.set_current()  # actor refs follow the current app, like @shared_task
    return supervise_runner(Supervision(celery_app))
# --8<-- [end:conftest]

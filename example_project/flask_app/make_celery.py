"""The module ``celery -A`` loads: ``celery -A example_project.flask_app.make_celery worker``."""

from example_project.flask_app import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]

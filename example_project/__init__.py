"""An example project using celery_supervise: a Django site and a Flask app sharing one
reusable domain package, ``example_project.wallets``. See ``example_project/README.md``."""

#!/usr/bin/env python
"""Django's command-line utility for the example site: ``python example_project/manage.py
runserver``."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The site is the package ``example_project.django_site``: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.django_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)

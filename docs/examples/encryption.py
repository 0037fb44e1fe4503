"""Encryption at rest (docs/long-lived.md): ``supervise_codec`` names the codec.

Either the class, which reads its keys from ``$SUPERVISE_FERNET_KEYS``, or an instance built
in a module of yours from keys you keep where you keep secrets.
"""

# --8<-- [start:instance]
# proj/crypto.py: the keys from wherever you keep secrets, newest first
import os

from celery_supervise.codecs import FernetCodec

codec = FernetCodec(os.environ["PROJ_FERNET_KEYS"].split(","))
# settings: supervise_codec = "proj.crypto:codec"
# --8<-- [end:instance]

# --8<-- [start:settings]
# settings (Django: CELERY_SUPERVISE_CODEC; keys newest first in $SUPERVISE_FERNET_KEYS)
supervise_codec = "celery_supervise.codecs.FernetCodec"
# --8<-- [end:settings]

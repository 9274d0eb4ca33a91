"""``hgext_luigi.wsgi.make_app``, the name a WSGI script imports (pushes over
HTTP with OIDC tokens); it lives in :mod:`hgext_luigi.hg.wsgi`."""

from .hg.wsgi import make_app  # noqa: F401

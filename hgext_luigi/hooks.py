"""The hooks, under the names an hgrc lists them by when ``[luigi] auto-hooks``
is off (``python:hgext_luigi.hooks.commit_hook``...); they live in
:mod:`hgext_luigi.hg.hooks`."""

from .hg.hooks import (changegroup_hook, commit_hook, pretxnchangegroup_hook,  # noqa: F401
                       txnabort_hook)

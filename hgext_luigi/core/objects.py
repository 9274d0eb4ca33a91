"""Outputs in object storage: ``[luigi] output-root = s3://bucket/prefix``.

Plain Python (no Mercurial, no Luigi).  The URL helpers are pure; reading an
object (its size and sha256, whether it exists) goes through boto3, imported
inside the functions that need it, so nothing pays for it unless an output
root is in S3.

A stamped output lives at ``s3://bucket/prefix/<changeset>/<path>``.  A
"directory" output is the set of objects under ``<key>/``: its digest is the
one :func:`lineage.file_digest` gives the same files on disk (each file's
relative name and sha256, in the order ``os.walk`` visits them), so the same
tree has the same digest wherever it is stored.
"""

import hashlib
import os
import re

SCHEME = "s3://"
CHUNK = 1 << 20

# the rules of S3 for bucket names (general purpose buckets)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_BUCKET_RESERVED = (("xn--", "sthree-", "amzn-s3-demo-"), ("-s3alias", "--ol-s3", ".mrap",
                                                           "--x-s3"))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ANY_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_NOT_FOUND = ("NoSuchKey", "404", "NotFound")


def is_url(path):
    """Whether ``path`` names an object (``s3://...``) rather than a file."""
    return isinstance(path, str) and path.startswith(SCHEME)


def has_scheme(value):
    """Whether ``value`` looks like a URL of any scheme (``gs://``, ``S3://``...),
    so a configuration value is never taken for a local folder by mistake."""
    return bool(_ANY_SCHEME.match(value))


def _bucket_problem(bucket):
    """Why ``bucket`` is not a valid bucket name, or None."""
    if not bucket:
        return "no bucket name"
    if not _BUCKET.match(bucket):
        return ("bucket name %r is not 3-63 lowercase letters, digits, dots and "
                "hyphens, starting and ending with a letter or digit" % bucket)
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        return "bucket name %r has two separators in a row" % bucket
    if bucket.startswith(_BUCKET_RESERVED[0]) or bucket.endswith(_BUCKET_RESERVED[1]):
        return "bucket name %r uses a prefix or suffix S3 reserves" % bucket
    import ipaddress  # only when an output root is read

    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return None
    return "bucket name %r is an IP address" % bucket


def _segments_problem(key):
    """Why ``key`` (``a/b/c``) is not a safe key, or None: every segment is a
    name (no empty, ``.`` or ``..`` segment, which S3 keeps literally but a
    path reading would take for a way out)."""
    if _CONTROL.search(key):
        return "%r holds a control character" % key
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            return "%r has a %r segment" % (key, segment or "//")
    return None


def check_root(url):
    """The output root ``url`` normalized (no trailing ``/``), or ValueError
    saying what is wrong with it."""
    if not is_url(url):
        raise ValueError("%r is not an s3:// URL" % url)
    bucket, _sep, prefix = url[len(SCHEME):].partition("/")
    problem = _bucket_problem(bucket)
    prefix = prefix[:-1] if prefix.endswith("/") else prefix
    if problem is None and prefix:
        problem = _segments_problem(prefix)
    if problem is not None:
        raise ValueError(problem)
    return SCHEME + bucket + ("/" + prefix if prefix else "")


def split(url):
    """``(bucket, key)`` of an ``s3://bucket/key`` URL."""
    if not is_url(url):
        raise ValueError("%r is not an s3:// URL" % url)
    bucket, _sep, key = url[len(SCHEME):].partition("/")
    return bucket, key


def join(root, *parts):
    """``root/part/...``: each part a relative ``/``-separated path of names
    (a stamped target's changeset, then its path), never a way out of ``root``."""
    for part in parts:
        problem = _segments_problem(part)
        if problem is not None:
            raise ValueError("cannot put %r under %s: %s" % (part, root, problem))
    return "/".join([root.rstrip("/")] + list(parts))


def relative_to(path, root):
    """The key of ``path`` relative to ``root`` when it lies strictly inside it
    (both ``s3://`` URLs), else None; the inverse of :func:`join`."""
    if not (is_url(path) and is_url(root)):
        return None
    inside = root.rstrip("/") + "/"
    if not path.startswith(inside) or len(path) == len(inside):
        return None
    return path[len(inside):]


# -- reading objects (boto3) ---------------------------------------------------

_SESSION_ARGS = ("profile_name", "region_name")


def client(client_kwargs=None):
    """A new boto3 S3 client.  ``client_kwargs``: ``profile_name`` and
    ``region_name`` for the session, anything else (``endpoint_url``, keys)
    for the client; None values are left to boto3's chain (which also reads
    ``AWS_ENDPOINT_URL_S3`` and ``AWS_ENDPOINT_URL``)."""
    import boto3

    kwargs = {k: v for k, v in (client_kwargs or {}).items() if v is not None}
    session = boto3.session.Session(**{k: kwargs.pop(k) for k in _SESSION_ARGS
                                       if k in kwargs})
    return session.client("s3", **kwargs)


def _not_found(error):
    return error.response.get("Error", {}).get("Code") in _NOT_FOUND


def _hash_body(body):
    """``(size, sha256)`` of a ``get_object`` body, read in chunks."""
    h = hashlib.sha256()
    size = 0
    try:
        for chunk in body.iter_chunks(CHUNK):
            size += len(chunk)
            h.update(chunk)
    finally:
        body.close()
    return size, h.hexdigest()


def _object_digest(s3, bucket, key):
    """``(size, sha256)`` of one object, None when there is none."""
    from botocore.exceptions import ClientError

    try:
        got = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if _not_found(e):
            return None
        raise
    return _hash_body(got["Body"])


def _listed(s3, bucket, prefix):
    """The keys under ``prefix`` (which ends with ``/``), relative to it;
    folder markers (keys ending with ``/``) left out."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"][len(prefix):] for page in pages for o in page.get("Contents", ())
            if not o["Key"].endswith("/")]


def walk_order(rel):
    """Sort key putting relative names in the order ``os.walk`` (folders
    sorted) visits them: a folder's files first, then its subfolders."""
    parts = rel.split("/")
    return [(1, p) for p in parts[:-1]] + [(0, parts[-1])]


def _prefix_digest(s3, bucket, key):
    """``(size, sha256)`` of the objects under ``key/`` as
    :func:`lineage.file_digest` hashes a directory, None when there is none."""
    prefix = key.rstrip("/") + "/" if key else ""
    names = sorted(_listed(s3, bucket, prefix), key=walk_order)
    if not names:
        return None
    h = hashlib.sha256()
    total = 0
    for rel in names:
        got = _object_digest(s3, bucket, prefix + rel)
        if got is None:  # deleted while we read: the output is not what it was
            raise FileNotFoundError("%s%s/%s vanished while hashed" % (SCHEME, bucket,
                                                                        prefix + rel))
        total += got[0]
        h.update(("%s\0%s\n" % (rel, got[1])).encode("utf-8", "surrogateescape"))
    return total, h.hexdigest()


def digest(url, client_kwargs=None, s3=None):
    """``(size, sha256)`` of the object at ``url``, or of the objects under
    ``url/`` taken as a directory; None when there is neither.  ``s3``: a boto3
    S3 client to read with (else one from ``client_kwargs``).  Other errors
    (access denied, no credentials) are boto3's exceptions."""
    bucket, key = split(url)
    s3 = s3 or client(client_kwargs)
    got = _object_digest(s3, bucket, key) if key and not key.endswith("/") else None
    return got if got is not None else _prefix_digest(s3, bucket, key)


def exists(url, client_kwargs=None, s3=None):
    """Whether there is an object at ``url`` or objects under ``url/``."""
    from botocore.exceptions import ClientError

    bucket, key = split(url)
    s3 = s3 or client(client_kwargs)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as e:
        if not _not_found(e):
            raise
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
    return bool(listed.get("KeyCount"))


class Reader:
    """One S3 client for many objects (``--verify``, a plan's reuse checks),
    made on first use from ``client_kwargs`` (the hg process's chain)."""

    def __init__(self, client_kwargs=None):
        self.client_kwargs = client_kwargs
        self._s3 = None

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = client(self.client_kwargs)
        return self._s3

    def digest(self, url):
        return digest(url, s3=self.s3)

    def exists(self, url):
        return exists(url, s3=self.s3)


def outputs_exist(client_kwargs=None, on_error=None):
    """``outputs_exist(path)`` for the planner: a file by ``os.path.exists``, an
    object by asking S3.  Only a definite "not there" counts as missing: when S3
    cannot answer (no credentials, access denied), the build's lineage is
    trusted, and Luigi's ``complete()`` in the run checks the output again;
    ``on_error(path, exception)`` is told the first time."""
    reader = Reader(client_kwargs)
    failed = []

    def exists_(path):
        if not is_url(path):
            return os.path.exists(path)
        try:
            return reader.exists(path)
        except Exception as e:  # boto3's errors: see above
            if on_error is not None and not failed:
                on_error(path, e)
            failed.append(path)
            return True

    return exists_

"""Serve a repository through hgweb, behind OpenID Connect tokens.

An ``hgweb.wsgi`` file::

    from hgext_luigi.wsgi import make_app
    application = make_app("/srv/repo")

Every request must carry a JWT of the configured OIDC issuer: in
``Authorization: Bearer <jwt>``, or as the password of HTTP Basic auth (the
only way Mercurial clients send credentials; the Basic user name is ignored).
The token's user becomes hgweb's ``REMOTE_USER`` (so ``[web] allow-push`` and
the push hooks see it) and its groups reach the push hooks through
:mod:`hgext_luigi.core.identity`.  Anything else gets ``401`` with a Basic
challenge, and hgweb never sees the request.

Settings, in the repository's ``[luigi.oidc]`` section (read once, here):
``issuer``, ``audience`` (both required), ``user-claim``, ``groups-claim``,
``algorithms``, ``leeway``, ``anonymous-read``, ``realm``.
"""

import base64
import binascii
import dataclasses
import importlib
import ipaddress
import json
import threading
import urllib.parse
import urllib.request

import jwt
from jwt import algorithms as jwt_algorithms

from mercurial import error, hg, pycompat
from mercurial import ui as uimod
from mercurial.hgweb import hgweb

from ..core import identity

SECTION = b'luigi.oidc'
DEFAULT_USER_CLAIMS = ('preferred_username', 'email', 'sub')
DEFAULT_ALGORITHMS = ('RS256', 'ES256')
# wire-protocol commands that write, even when sent as GET
WRITE_COMMANDS = frozenset(['unbundle', 'pushkey'])
READ_METHODS = frozenset(['GET', 'HEAD'])
# how long an unknown key id must wait before it may make us refetch the JWKS:
# bounds what anyone without a token can make us ask of the identity provider
REFRESH_COOLDOWN = 10.0
JWKS_LIFESPAN = 300.0
HTTP_TIMEOUT = 10.0
MAX_TOKEN = 16384  # longer is not a token we issued: no parsing, no fetch


class Rejected(Exception):
    """The request's credentials are not acceptable: 401, ``reason`` as body."""


class Unavailable(Exception):
    """The identity provider cannot be asked now: 503, details to the log."""


@dataclasses.dataclass(frozen=True)
class OidcSettings:
    """``[luigi.oidc]`` of the served repository, checked."""

    issuer: str
    audience: str
    user_claims: tuple
    groups_claim: str
    algorithms: tuple
    leeway: int
    anonymous_read: bool
    realm: str


def _abort(msg, hint=None):
    return error.Abort(msg.encode('utf-8'),
                       hint=hint.encode('utf-8') if hint else None)


def _text(value):
    return value.decode('utf-8') if isinstance(value, bytes) else value


def _required(ui, name, example):
    value = _text(ui.config(SECTION, name, None) or b'').strip()
    if not value:
        raise _abort('[luigi.oidc] %s is not set' % name.decode(),
                     'set it in the hgrc of the served repository, e.g. %s = %s'
                     % (name.decode(), example))
    return value


def _loopback(host):
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url, what):
    """Keys fetched over plain HTTP can be swapped by anyone on the path, who
    could then sign tokens for anyone: https, but on loopback (tests)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == 'https' and parts.hostname:
        return url
    if parts.scheme == 'http' and parts.hostname and _loopback(parts.hostname):
        return url
    raise _abort('[luigi.oidc] %s must be an https:// URL, not %r' % (what, url),
                 'plain http is accepted on loopback addresses only')


def check_algorithms(names):
    """Signature algorithms to accept: asymmetric ones PyJWT knows.  ``none``
    proves nothing, and HS* would verify with the public key as an HMAC secret
    (anyone can forge such tokens: the key-confusion attack)."""
    known = jwt_algorithms.get_default_algorithms()
    for name in names:
        alg = known.get(name)
        if name.lower() == 'none' or isinstance(alg, jwt_algorithms.NoneAlgorithm):
            raise _abort('[luigi.oidc] algorithms: %s is refused' % name,
                         'unsigned tokens prove nothing')
        if name.upper().startswith('HS') or isinstance(alg, jwt_algorithms.HMACAlgorithm):
            raise _abort('[luigi.oidc] algorithms: %s is refused' % name,
                         'an HMAC algorithm checked against the public key is the '
                         'classic key-confusion attack; list asymmetric ones '
                         '(RS256, ES256, ...)')
        if alg is None:
            raise _abort('[luigi.oidc] algorithms: %s is not a signature algorithm'
                         % name, 'one of %s' % ', '.join(
                             sorted(n for n, a in known.items() if not isinstance(
                                 a, (jwt_algorithms.NoneAlgorithm,
                                     jwt_algorithms.HMACAlgorithm)))))
    return tuple(names)


def read_settings(ui):
    """The ``[luigi.oidc]`` settings of ``ui`` (a repository's), checked; a bad
    or missing one is an :class:`~mercurial.error.Abort` naming it.  Every
    read has its fallback: the extension need not be enabled here."""
    issuer = check_url(_required(ui, b'issuer', 'https://login.example.com'), 'issuer')
    audience = _required(ui, b'audience', 'hg')
    claims = tuple(_text(c) for c in ui.configlist(SECTION, b'user-claim', []))
    algorithms = tuple(_text(a) for a in ui.configlist(SECTION, b'algorithms', []))
    leeway = ui.configint(SECTION, b'leeway', 30)
    if leeway is None or leeway < 0:
        raise _abort('[luigi.oidc] leeway must be a number of seconds >= 0')
    realm = _text(ui.config(SECTION, b'realm', b'hgext_luigi') or b'hgext_luigi')
    if any(c in realm for c in '"\\') or not realm.isprintable():
        raise _abort('[luigi.oidc] realm must be printable, without " or \\')
    return OidcSettings(
        issuer=issuer,
        audience=audience,
        user_claims=claims or DEFAULT_USER_CLAIMS,
        groups_claim=_text(ui.config(SECTION, b'groups-claim', b'groups')) or 'groups',
        algorithms=check_algorithms(algorithms or DEFAULT_ALGORITHMS),
        leeway=leeway,
        anonymous_read=ui.configbool(SECTION, b'anonymous-read', False),
        realm=realm,
    )


def initialize_mercurial():
    """Mercurial 7 registers its commands and template keywords when
    ``mercurial.initialization`` is imported; opening a repository first
    breaks that import (hgweb's own, then: "duplicate registration").  Older
    versions have no such module and need nothing."""
    try:
        importlib.import_module('mercurial.initialization').init()
    except ImportError:
        pass


def load_settings(repo_path):
    """The settings as the server's hgrc and the repository's ``.hg/hgrc`` give
    them (and the extensions they enable)."""
    initialize_mercurial()
    repo = hg.repository(uimod.ui.load(), pycompat.fsencode(repo_path))
    return read_settings(repo.ui)


# -- tokens ------------------------------------------------------------------

# most specific first: InvalidSignatureError is a DecodeError
_REASONS = (
    (jwt.ExpiredSignatureError, 'token expired'),
    (jwt.ImmatureSignatureError, 'token not yet valid'),
    (jwt.InvalidAudienceError, 'token not for this audience'),
    (jwt.InvalidIssuerError, 'token from another issuer'),
    (jwt.MissingRequiredClaimError, 'token lacks a required claim'),
    (jwt.InvalidSignatureError, 'bad token signature'),
    (jwt.InvalidAlgorithmError, 'token algorithm not allowed'),
    (jwt.DecodeError, 'malformed token'),
)


def reason(exc):
    """What to tell the client about a refused token: short, and nothing of
    the token itself."""
    for kind, text in _REASONS:
        if isinstance(exc, kind):
            return text
    return 'invalid token'


class Verifier:
    """Checks tokens against the issuer's keys.  The discovery document is read
    once (when first needed, so a server starts while the provider is down);
    PyJWKClient caches the key set and refetches it for an unknown key id,
    at most once per ``refresh_cooldown`` seconds."""

    def __init__(self, settings, refresh_cooldown=REFRESH_COOLDOWN):
        self.settings = settings
        self.refresh_cooldown = refresh_cooldown
        self._client = None
        self._lock = threading.Lock()

    def discovery_url(self):
        # OIDC Discovery: the issuer without its trailing slash, plus the path
        return self.settings.issuer.rstrip('/') + '/.well-known/openid-configuration'

    def _discover(self):
        url = self.discovery_url()
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
                doc = json.load(response)
        except (OSError, ValueError) as e:
            raise Unavailable('cannot read %s: %s' % (url, e))
        if not isinstance(doc, dict) or doc.get('issuer') != self.settings.issuer:
            # the spec requires it: another issuer's document is not ours
            raise Unavailable('%s does not describe issuer %s' % (url, self.settings.issuer))
        jwks_uri = doc.get('jwks_uri')
        if not isinstance(jwks_uri, str):
            raise Unavailable('%s has no jwks_uri' % url)
        try:
            return check_url(jwks_uri, 'jwks_uri of the issuer')
        except error.Abort as e:
            raise Unavailable(str(e))

    def client(self):
        with self._lock:
            if self._client is None:
                self._client = jwt.PyJWKClient(
                    self._discover(), cache_jwk_set=True, lifespan=JWKS_LIFESPAN,
                    timeout=HTTP_TIMEOUT, cooldown_duration=self.refresh_cooldown)
            return self._client

    def signing_key(self, kid):
        client = self.client()
        try:
            return client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as e:
            raise Unavailable('cannot read the key set: %s' % e)
        except jwt.PyJWKSetError as e:
            raise Unavailable('bad key set: %s' % e)
        except jwt.PyJWKClientError:
            raise Rejected('unknown signing key')

    def header(self, token):
        """The token's header, checked before any key is fetched: junk costs the
        identity provider nothing."""
        if len(token) > MAX_TOKEN:
            raise Rejected('malformed token')
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Rejected('malformed token')
        if header.get('alg') not in self.settings.algorithms:
            raise Rejected('token algorithm not allowed')
        if not isinstance(header.get('kid'), str) or not header['kid']:
            raise Rejected('token names no signing key (kid)')
        return header

    def claims(self, token):
        """The verified claims of ``token``, or :class:`Rejected` saying why."""
        key = self.signing_key(self.header(token)['kid'])
        s = self.settings
        try:
            return jwt.decode(token, key, algorithms=list(s.algorithms),
                              audience=s.audience, issuer=s.issuer, leeway=s.leeway,
                              options={'require': ['exp', 'iss', 'aud']})
        except jwt.PyJWTError as e:
            raise Rejected(reason(e))


def user_of(claims, settings):
    """The first user claim holding a name; none is a refusal, not anonymity."""
    for name in settings.user_claims:
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value
    raise Rejected('token names no user')


def groups_of(claims, settings):
    """The groups claim as a tuple of names (a list, or one string); other
    values grant nothing."""
    value = claims.get(settings.groups_claim)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(g for g in value if isinstance(g, str))
    return ()


# -- requests ----------------------------------------------------------------

def credentials(environ):
    """The token the request carries, or None without an Authorization header.
    Basic auth: the password is the token (how hg sends it), the user name is
    the client's to choose and means nothing."""
    header = environ.get('HTTP_AUTHORIZATION', '').strip()
    if not header:
        return None
    scheme, _sep, value = header.partition(' ')
    scheme, value = scheme.lower(), value.strip()
    if scheme == 'bearer' and value:
        return value
    if scheme == 'basic':
        try:
            decoded = base64.b64decode(value, validate=True).decode('latin-1')
        except (binascii.Error, ValueError):
            raise Rejected('malformed basic credentials')
        token = decoded.partition(':')[2]
        if token:
            return token
        raise Rejected('no token given as password')
    raise Rejected('unsupported authorization scheme')


def is_read(environ):
    """A GET/HEAD that is no write command of hgweb's wire protocol (pushes are
    POST ``?cmd=unbundle``; ``pushkey`` moves bookmarks and phases).  Every
    ``cmd`` counts, whichever one hgweb would pick."""
    if environ.get('REQUEST_METHOD', 'GET').upper() not in READ_METHODS:
        return False
    query = urllib.parse.parse_qsl(environ.get('QUERY_STRING', ''),
                                   keep_blank_values=True)
    return not any(k == 'cmd' and v in WRITE_COMMANDS for k, v in query)


def _wsgi_str(text):
    # PEP 3333: environ values are bytes as latin-1 code points; hgweb turns
    # them back into bytes, so a UTF-8 name arrives as UTF-8
    return text.encode('utf-8').decode('latin-1')


def challenge(start_response, realm, why):
    """401 with a Basic challenge: Mercurial clients answer only Basic (a
    Bearer challenge makes them crash) and then send the token as password."""
    body = ('%s\n' % why).encode('utf-8')
    start_response('401 Unauthorized', [
        ('WWW-Authenticate', 'Basic realm="%s"' % realm),
        ('Content-Type', 'text/plain; charset=utf-8'),
        ('Content-Length', str(len(body))),
    ])
    return [body]


def log(environ, message):
    """A line in the server's error log (never a token: reasons only)."""
    environ['wsgi.errors'].write('hgext_luigi.wsgi: %s\n' % message)
    environ['wsgi.errors'].flush()


def unavailable(environ, start_response, detail):
    # the details (URLs, errors) are for the operator, not the client
    log(environ, 'identity provider: %s' % detail)
    body = b'identity provider unavailable\n'
    start_response('503 Service Unavailable', [
        ('Content-Type', 'text/plain; charset=utf-8'),
        ('Content-Length', str(len(body))),
        ('Retry-After', '30'),
    ])
    return [body]


def run_as(user, groups, fn):
    """``fn()`` with the request's identity set for the push hooks, cleared
    after: a thread may serve another request next."""
    identity.set_request(user, groups)
    try:
        return fn()
    finally:
        identity.clear()


class IdentityBody:
    """hgweb's response body, iterated with the request's identity set: hgweb
    runs a push's hooks lazily, while the body is produced.  Cleared between
    chunks (the server may serve others meanwhile) and after."""

    def __init__(self, body, user, groups):
        self.body = body
        self.user = user
        self.groups = groups

    def __iter__(self):
        chunks = iter(self.body)
        while True:
            try:
                chunk = run_as(self.user, self.groups, lambda: next(chunks))
            except StopIteration:
                return
            yield chunk

    def close(self):
        close = getattr(self.body, 'close', None)
        if close is not None:
            run_as(self.user, self.groups, close)


def authenticate(verifier, environ):
    """(user, groups) of the request, or None for an anonymous read; raises
    :class:`Rejected` or :class:`Unavailable`."""
    token = credentials(environ)
    if token is None:
        if verifier.settings.anonymous_read and is_read(environ):
            return None
        raise Rejected('authentication required')
    claims = verifier.claims(token)
    return user_of(claims, verifier.settings), groups_of(claims, verifier.settings)


def make_app(repo_path, refresh_cooldown=REFRESH_COOLDOWN):
    """A WSGI application serving the repository at ``repo_path`` through hgweb,
    every request authenticated by an OIDC token first.  Reads the settings
    now: a missing or unsafe one aborts here, not at the first request.
    ``refresh_cooldown``: seconds between JWKS refetches for unknown key ids."""
    settings = load_settings(repo_path)
    verifier = Verifier(settings, refresh_cooldown)
    served = hgweb(pycompat.fsencode(repo_path))

    def application(environ, start_response):
        # only a verified token says who the request is
        environ.pop('REMOTE_USER', None)
        identity.clear()
        try:
            who = authenticate(verifier, environ)
        except Rejected as e:
            if 'HTTP_AUTHORIZATION' in environ:
                # hg shows its user only "authorization failed": say why here
                log(environ, 'refused credentials from %s: %s'
                    % (environ.get('REMOTE_ADDR', '?'), e))
            return challenge(start_response, settings.realm, e)
        except Unavailable as e:
            return unavailable(environ, start_response, e)
        # the token stays here: nothing behind needs it
        environ.pop('HTTP_AUTHORIZATION', None)
        if who is None:
            return served(environ, start_response)
        user, groups = who
        environ['REMOTE_USER'] = _wsgi_str(user)
        environ['AUTH_TYPE'] = 'Bearer'
        body = run_as(user, groups, lambda: served(environ, start_response))
        return IdentityBody(body, user, groups)

    application.settings = settings
    application.verifier = verifier
    return application

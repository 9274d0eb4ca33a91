"""hgweb behind OpenID Connect tokens (``hgext_luigi.wsgi``).

A real identity provider stand-in (discovery document and JWKS over HTTP, in a
thread), real keys and tokens, the app served by wsgiref in its own process,
and the real ``hg`` pushing and cloning through it.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import Hg, Repo, free_port, make_server_repo
from cryptography.hazmat.primitives.asymmetric import rsa
from oidcserver import AUDIENCE, COOLDOWN, REALM, App, Provider

# a server-side hook recording who hgweb says pushed and the groups the token
# gave that user, as the push hooks of the extension read them
HOOK = """\
import json

from hgext_luigi.core import identity
from hgext_luigi.hg import trigger

OUT = %r


def hook(ui, repo, url=None, **kwargs):
    user = trigger.pusher(ui, url)
    with open(OUT, "a") as f:
        f.write(json.dumps({"user": user, "groups": list(identity.token_groups(user))}) + "\\n")
"""


@pytest.fixture(scope="module")
def idp():
    provider = Provider()
    yield provider
    provider.stop()


def oidc_repo(hg, path, idp, settings=""):
    """A repository to push to over HTTP, with ``[luigi.oidc]`` for ``idp`` and
    hooks recording the pusher as hgweb and the token's groups see it."""
    repo = make_server_repo(hg, path)
    hookmod = os.path.join(os.path.dirname(path), "recordhook.py")
    with open(hookmod, "w") as f:
        f.write(HOOK % os.path.join(path, "pushes.jsonl"))
    repo.config(
        "[extensions]\nhgext_luigi =\n"
        "[hooks]\n"
        "pretxnchangegroup.url = echo \"$HG_URL\" >> %s\n"
        "pretxnchangegroup.identity = python:%s:hook\n"
        "[luigi.oidc]\nissuer = %s\naudience = %s\n%s"
        % (os.path.join(path, "urls.txt"), hookmod, idp.url, AUDIENCE, settings))
    return repo


def pushes(repo):
    """What the hooks recorded: [(HG_URL, {user, groups})] per push."""
    path = lambda name: os.path.join(repo.path, name)  # noqa: E731
    if not os.path.exists(path("urls.txt")):
        return []
    with open(path("urls.txt")) as urls, open(path("pushes.jsonl")) as seen:
        return list(zip(urls.read().split(), map(json.loads, seen)))


def pushed_by(url):
    """The user of a hook's ``HG_URL``, ``remote:http:HOST:USER`` (HOST is
    hgweb's ``REMOTE_HOST``: empty under wsgiref, which sets only REMOTE_ADDR)."""
    assert url.startswith("remote:http:")
    return url.rsplit(":", 1)[1]


def client_repo(hg, path):
    hg("init", path)
    repo = Repo(hg, path)
    repo.write("a.txt", "one\n")
    repo.commit("first")
    return repo


def changesets(repo):
    return repo("log", "-T", "{node}\n").stdout.split()


def request(url, token=None, method="GET", query="cmd=capabilities"):
    """(status, headers, body) of one plain HTTP request, bearer token or not."""
    req = urllib.request.Request(url + "?" + query, method=method,
                                 data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read().decode()


def assert_refused(answer, why):
    status, headers, body = answer
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="%s"' % REALM
    assert body.strip() == why


@pytest.fixture
def app(hg):
    started = []

    def start(repo):
        started.append(App(hg, repo))
        return started[-1]

    yield start
    for a in started:
        a.stop()


@pytest.fixture(scope="module")
def locked(tmp_path_factory, idp):
    """One app whose repository no test may change: every push to it fails."""
    tmp = tmp_path_factory.mktemp("locked")
    (tmp / "home").mkdir()
    hg = Hg(str(tmp / "home"))
    server = oidc_repo(hg, str(tmp / "server"), idp)
    served = App(hg, server)
    client = client_repo(hg, str(tmp / "client"))
    yield served, server, client
    served.stop()


def test_push_with_token_as_password_is_the_token_user(hg, tmp_path, idp, app):
    server = oidc_repo(hg, str(tmp_path / "server"), idp)
    served = app(server)
    client = client_repo(hg, str(tmp_path / "client"))
    # the basic-auth user name says mallory: only the token's user counts
    out = client("push", served.with_token(idp.token(), user="mallory"))
    assert "added 1 changesets" in out.stdout
    assert changesets(server) == changesets(client)
    [(url, seen)] = pushes(server)
    assert pushed_by(url) == "alice" and seen["user"] == "alice"


def test_user_claim_order_falls_back_to_email_then_sub(hg, tmp_path, idp, app):
    server = oidc_repo(hg, str(tmp_path / "server"), idp)
    served = app(server)
    client = client_repo(hg, str(tmp_path / "client"))
    client("push", served.with_token(idp.token(preferred_username=None)))
    client.write("a.txt", "two\n")
    client.commit("second")
    client("push", served.with_token(idp.token(preferred_username=None, email=None)))
    assert [pushed_by(url) for url, _seen in pushes(server)] == [
        "alice%40example.com", "u-1234"]


def test_es256_token_accepted(locked, idp):
    served, _server, _client = locked
    status, _headers, body = request(served.url, idp.token(alg="ES256"))
    assert status == 200 and "unbundle=" in body


BAD = {
    "expired": (lambda p: p.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
                "token expired"),
    "wrong audience": (lambda p: p.token(aud="another-app"), "token not for this audience"),
    "wrong issuer": (lambda p: p.token(iss="https://idp.example.com"),
                     "token from another issuer"),
    "bad signature": (lambda p: p.token(key=rsa.generate_private_key(
        public_exponent=65537, key_size=2048)), "bad token signature"),
    "unknown kid": (lambda p: p.token(kid="nobody-knows"), "unknown signing key"),
    "alg none": (Provider.unsigned_token, "token algorithm not allowed"),
    "HS256 with the public key": (Provider.key_confusion_token, "token algorithm not allowed"),
    "malformed": (lambda p: "not-a-jwt", "malformed token"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_token_is_refused_and_push_fails(locked, idp, case):
    served, server, client = locked
    make, why = BAD[case]
    token = make(idp)
    answer = request(served.url, token)
    assert_refused(answer, why)
    assert token not in answer[2] and token not in str(answer[1])

    proc = client("push", served.with_token(token), check=False)
    assert proc.returncode != 0
    assert "abort: authorization failed" in proc.stderr
    assert token not in proc.stdout + proc.stderr
    assert changesets(server) == [] and pushes(server) == []
    # hg says only "authorization failed": the server's log says why
    with open(served.log) as f:
        log = f.read()
    assert "refused credentials from 127.0.0.1: %s" % why in log
    assert token not in log


def test_unknown_kid_refetches_keys_once_then_refuses(hg, tmp_path, idp, app):
    served = app(oidc_repo(hg, str(tmp_path / "server"), idp))
    assert request(served.url, idp.token())[0] == 200
    time.sleep(COOLDOWN + 0.2)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    before = idp.jwks_fetches()
    assert_refused(request(served.url, idp.token(kid="rotated", key=other)),
                   "unknown signing key")
    assert idp.jwks_fetches() == before + 1
    # within the cooldown another unknown kid costs the provider nothing
    assert_refused(request(served.url, idp.token(kid="rotated-2", key=other)),
                   "unknown signing key")
    assert idp.jwks_fetches() == before + 1

    # the provider publishes the rotated key: one refetch finds it
    idp.add_key(other, "rotated")
    time.sleep(COOLDOWN + 0.2)
    assert request(served.url, idp.token(kid="rotated", key=other))[0] == 200
    assert idp.jwks_fetches() == before + 2


def test_keys_are_fetched_once_for_many_requests(hg, tmp_path, idp, app):
    before = dict(idp.fetches)
    served = app(oidc_repo(hg, str(tmp_path / "server"), idp))
    for token in [idp.token(), idp.token(alg="ES256"), idp.token(), idp.token()]:
        assert request(served.url, token)[0] == 200
    assert idp.fetches["jwks"] == before["jwks"] + 1
    assert idp.fetches["discovery"] == before["discovery"] + 1


def test_groups_claim_reaches_the_push_hooks(hg, tmp_path, idp, app):
    server = oidc_repo(hg, str(tmp_path / "server"), idp)
    served = app(server)
    client = client_repo(hg, str(tmp_path / "client"))
    prefix = "[auth]\noidc.prefix = http://127.0.0.1:%d\noidc.username = mallory\n" % served.port
    client.config(prefix + "oidc.password = %s\n" % idp.token(groups=["data-eng", "ops"]))
    client("push", served.url)
    # a single string is one group
    client.write("a.txt", "two\n")
    client.commit("second")
    client.config(prefix + "oidc.password = %s\n" % idp.token(groups="data-eng"))
    client("push", served.url)
    assert [seen for _url, seen in pushes(server)] == [
        {"user": "alice", "groups": ["data-eng", "ops"]},
        {"user": "alice", "groups": ["data-eng"]}]


def test_anonymous_read_clones_but_never_pushes(hg, tmp_path, idp, app):
    server = oidc_repo(hg, str(tmp_path / "server"), idp, "anonymous-read = true\n")
    client_repo(hg, str(tmp_path / "seed"))("push", server.path)
    served = app(server)
    hg("clone", served.url, str(tmp_path / "anon"))
    anon = Repo(hg, str(tmp_path / "anon"))
    assert changesets(anon) == changesets(server)

    anon.write("a.txt", "two\n")
    anon.commit("second")
    denied = anon("push", check=False)
    assert denied.returncode != 0
    assert "abort: http authorization required for %s" % served.url in denied.stderr
    assert len(changesets(server)) == 1
    # writes without a token, whatever the method, and bad tokens on reads
    assert_refused(request(served.url, method="POST"), "authentication required")
    assert_refused(request(served.url, query="cmd=pushkey&namespace=bookmarks"),
                   "authentication required")
    assert_refused(request(served.url, BAD["expired"][0](idp)), "token expired")

    anon("push", served.with_token(idp.token()))
    assert len(changesets(server)) == 2
    assert pushed_by(pushes(server)[-1][0]) == "alice"


def test_without_anonymous_read_clone_needs_a_token(locked, idp, tmp_path):
    served, _server, client = locked
    proc = client.hg("clone", served.url, str(tmp_path / "anon"), check=False)
    assert proc.returncode != 0
    assert "abort: http authorization required for %s" % served.url in proc.stderr
    assert not os.path.exists(str(tmp_path / "anon"))
    assert_refused(request(served.url), "authentication required")
    client.hg("clone", served.with_token(idp.token()), str(tmp_path / "alice"))


@pytest.mark.parametrize("settings, message", [
    ("audience = hg-test\n", "abort: [luigi.oidc] issuer is not set"),
    ("issuer = https://idp.example.com\n", "abort: [luigi.oidc] audience is not set"),
    ("issuer = https://idp.example.com\naudience = hg\nalgorithms = RS256 HS256\n",
     "abort: [luigi.oidc] algorithms: HS256 is refused\n(an HMAC algorithm checked "
     "against the public key is the classic key-confusion attack"),
    ("issuer = https://idp.example.com\naudience = hg\nalgorithms = none\n",
     "abort: [luigi.oidc] algorithms: none is refused"),
    ("issuer = http://idp.example.com\naudience = hg\n",
     "abort: [luigi.oidc] issuer must be an https:// URL"),
])
def test_bad_settings_abort_at_creation(hg, tmp_path, settings, message):
    repo = make_server_repo(hg, str(tmp_path / "server"))
    repo.config("[luigi.oidc]\n" + settings)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom mercurial import error\n"
         "from hgext_luigi.wsgi import make_app\n"
         "try:\n    make_app(sys.argv[1])\n"
         "except error.Abort as e:\n    sys.exit(e.format().decode())\n", repo.path],
        env=hg.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_unreachable_provider_is_503_not_401(hg, tmp_path, idp, app):
    server = oidc_repo(hg, str(tmp_path / "server"), idp)
    # the issuer's address answers nothing
    server.config("[luigi.oidc]\nissuer = http://127.0.0.1:%d\n" % free_port())
    served = app(server)
    status, _headers, body = request(served.url, idp.token())
    assert (status, body) == (503, "identity provider unavailable\n")
    with open(served.log) as f:
        assert "hgext_luigi.wsgi: identity provider: cannot read http://127.0.0.1:" in f.read()

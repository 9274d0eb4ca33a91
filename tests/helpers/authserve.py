"""Serve a repository over HTTP behind basic authentication, as a web server in
front of hgweb would: the authenticated user reaches hgweb as ``REMOTE_USER``.

    python authserve.py REPO PORT USER:PASSWORD...
"""

import base64
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from mercurial.hgweb import hgweb


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main():
    repo, port, users = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    creds = dict(u.split(":", 1) for u in users)
    app = hgweb(repo.encode())

    def authenticated(environ, start_response):
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if user in creds and creds[user] == password:
                environ["REMOTE_USER"] = user
                return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="hg"'),
                                            ("Content-Type", "text/plain")])
        return [b"authorization required\n"]

    server = make_server("127.0.0.1", port, authenticated, server_class=ThreadingServer,
                         handler_class=QuietHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""hgweb: ``/luigi/REV``, the latest Luigi run at a changeset as a picture.

:func:`extsetup` adds the ``luigi`` web command to hgweb (``hg serve``, hgweb.wsgi,
:mod:`hgext_luigi.wsgi`) the way Mercurial's own extensions do (highlight): an
attribute of ``mercurial.hgweb.webcommands`` named in its ``__all__``, where hgweb
looks commands up.  It also puts a ``luigi`` link in the menu of the changeset
page of any changeset with a recorded run, by adding it to that request's copy of
the ``changeset`` template (paper, coal, gitweb, monoblue, spartan); other styles
are left as they are.

The page shows the run's graph (inline SVG when Graphviz's ``dot`` is installed,
else its DOT text) and a table of its tasks.  A style may give its own ``luigi``
template (keywords ``node``, ``rev``, ``symrev``, ``luigibody``: the graph and the
table as HTML).  ``?format=dot`` and ``?format=svg`` give the graph alone.
"""

import html
import os
import re
import time

from mercurial import error, extensions, pycompat
from mercurial.hgweb import webcommands, webutil
from mercurial.hgweb.common import (
    HTTP_BAD_REQUEST,
    HTTP_NOT_FOUND,
    HTTP_SERVER_ERROR,
    ErrorResponse,
)

from . import config
from ..core import graph

NAME = 'luigi'

# the page in the layout of paper (the default style), wrapped in the style's
# header and footer
TEMPLATE = b'''{header}
<title>{repo|escape}: luigi lineage of {node|short}</title>
</head>
<body>
<div class="container">
<div class="menu">
<div class="logo">
<a href="{logourl}">
<img src="{staticurl|urlescape}{logoimg}" alt="mercurial" /></a>
</div>
<ul>
 <li><a href="{url|urlescape}shortlog/{symrev}{sessionvars%urlparameter}">log</a></li>
 <li><a href="{url|urlescape}graph/{symrev}{sessionvars%urlparameter}">graph</a></li>
</ul>
<ul>
 <li><a href="{url|urlescape}rev/{symrev}{sessionvars%urlparameter}">changeset</a></li>
 <li class="active">luigi</li>
</ul>
</div>
<div class="main">
<h2 class="breadcrumb"><a href="/">Mercurial</a> {pathdef%breadcrumb}</h2>
<h3>luigi lineage of changeset {rev}:<a
 href="{url|urlescape}rev/{node|short}{sessionvars%urlparameter}">{node|short}</a></h3>
{luigibody}
</div>
</div>
{footer}
'''
_NEEDS = (b'header', b'footer', b'urlparameter', b'breadcrumb')

# pages of styles that are not HTML (raw, json) or lack what TEMPLATE uses
STANDALONE = '''<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<title>%(title)s</title>
</head>
<body>
<h1>%(title)s</h1>
%(body)s
</body>
</html>
'''


def _h(value):
    """HTML text of any value: escaped, non-ASCII as character references (right
    whatever charset hgweb announces)."""
    if isinstance(value, bytes):
        value = value.decode('utf-8', 'replace')
    return html.escape(graph.printable(value), quote=True)


def _ascii(text):
    return text.encode('ascii', 'xmlcharrefreplace')


def inline_svg(svg):
    """The ``<svg>`` element of an SVG document (bytes from ``dot -Tsvg``), without
    its XML declaration, doctype and comments before it, to put in an HTML page."""
    text = svg.decode('utf-8', 'replace') if isinstance(svg, bytes) else svg
    start = text.find('<svg')
    if start < 0:
        raise graph.GraphError("graphviz's dot gave no <svg> element")
    return text[start:]


def _when(ts):
    if ts is None:
        return '-'
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))


def page_body(data, dot_text, svg=None, why=None, url='/'):
    """The HTML (str) of a run's page: summary, graph (inline SVG, or the DOT text
    in a <pre> with ``why`` there is no picture), table of tasks.  ``data``: a
    :func:`graph.run_graph` result; ``url``: the repository's URL (links)."""
    run = data['run']
    out = ['<p class="luigi-run">run %s at %s: <b>%s</b>, by %s (%s), %s</p>'
           % (_h(graph.short(run['id'])), _h(graph.short(run['rev'])),
              _h(run['status'] or 'running'), _h(run['user']), _h(run['trigger']),
              _h(_when(run['ended'] or run['started'])))]
    if svg is not None:
        out.append('<div class="luigi-graph" style="overflow:auto">%s</div>'
                   % inline_svg(svg))
    else:
        out.append('<p class="luigi-nograph">%s. The graph in DOT:</p>'
                   % _h(why or 'no picture'))
        out.append('<pre class="luigi-dot">%s</pre>' % _h(dot_text))
    out.append('<table class="bigtable luigi-tasks">')
    out.append('<thead><tr><th>task</th><th>outcome</th><th>changeset</th>'
               '<th>build</th></tr></thead>')
    out.append('<tbody class="stripes2">')
    for t in data['tasks'] + data['extra']:
        outcome = t['outcome'] or ''
        color = graph.task_color(t)
        if t['changeset']:
            changeset = '<a href="%s">%s</a>' % (
                _h(url + 'rev/' + t['changeset']), _h(graph.short(t['changeset'])))
        else:
            changeset = '-'
        out.append('<tr><td class="luigi-key">%s</td>'
                   '<td class="luigi-outcome" style="background-color:%s">%s</td>'
                   '<td class="luigi-changeset">%s</td><td class="luigi-status">%s</td>'
                   '</tr>' % (_h(t['key']), _h(color), _h(outcome), changeset,
                              _h(t['status'])))
    out.append('</tbody></table>')
    out.append('<p><a href="?format=dot">DOT</a> <a href="?format=svg">SVG</a></p>')
    return '\n'.join(out)


def _not_found(message):
    # the message is also the status line's reason: ASCII, one line
    return ErrorResponse(HTTP_NOT_FOUND, pycompat.bytestr(message))


def _server_error(abort):
    # the message is also the status line's reason: ASCII, one line
    first = (abort.message or b'error').splitlines()[0]
    first = first.decode('ascii', 'replace').encode('ascii', 'replace')
    return ErrorResponse(HTTP_SERVER_ERROR, first)


def _read(repo, node):
    """The :func:`graph.run_graph` of the latest run at ``node`` (hex str)."""
    try:
        settings = config.Settings.read(repo.ui, repo)
    except error.Abort as e:
        raise _server_error(e)
    from . import stores

    if not stores.recorded(settings):
        raise _not_found(b'no luigi lineage recorded in this repository')
    try:
        store = stores.open_store(settings, write=False)
    except error.Abort as e:
        raise _server_error(e)
    try:
        return graph.run_graph(store, node)
    except graph.NoLineage:
        raise _not_found(b'no luigi run recorded at %s (hg luigi-run -r %s)'
                         % (pycompat.bytestr(node[:12]), pycompat.bytestr(node[:12])))
    finally:
        store.close()


def luigi(web):
    """
    /luigi[/{revision}]
    -------------------

    The latest Luigi run at a changeset (default: ``tip``): its tasks as a graph
    (inline SVG when Graphviz's ``dot`` is installed, else the DOT text), each
    filled by its outcome (ran green, reused grey, failed red, not run orange)
    with arrows to the upstream tasks it read, labelled with their changeset;
    and a table of each task's outcome and the changeset its output comes from.

    ``?format=dot`` gives the DOT text alone, ``?format=svg`` the SVG picture.

    The ``luigi`` template is rendered when the style has one.
    """
    ctx = webutil.changectx(web.repo, web.req)  # unknown revision: 404 by hgweb
    node = config.hexstr(ctx)
    fmt = web.req.qsparams.get(b'format', b'html')
    if fmt not in (b'html', b'dot', b'svg'):
        raise ErrorResponse(HTTP_BAD_REQUEST, b'format: html, dot or svg')
    data = _read(web.repo, node)
    dot_text = graph.graph_dot(data)
    res = web.res
    # hgweb's ETag follows the repository's changesets, not the lineage store: a
    # run finishing would not change it, and a browser would keep the old page
    if b'ETag' in res.headers:
        del res.headers[b'ETag']
    if fmt == b'dot':
        res.headers[b'Content-Type'] = b'text/plain; charset=utf-8'
        res.setbodybytes(dot_text.encode('utf-8', 'replace'))
        return res.sendresponse()
    svg = why = None
    try:
        svg = graph.render_svg(dot_text)
    except graph.GraphError as e:
        why = str(e)
    if fmt == b'svg':
        if svg is None:
            raise ErrorResponse(HTTP_SERVER_ERROR, why.encode('ascii', 'replace'))
        res.headers[b'Content-Type'] = b'image/svg+xml'
        res.headers[b'X-Content-Type-Options'] = b'nosniff'
        res.setbodybytes(svg)
        return res.sendresponse()
    url = pycompat.sysstr(web.req.apppath).rstrip('/') + '/'
    body = page_body(data, dot_text, svg, why, url=url)
    tmpl = web.tmpl
    html_style = res.headers.get(b'Content-Type', b'').startswith(b'text/html')
    if html_style and (b'luigi' in tmpl or all(n in tmpl for n in _NEEDS)):
        if b'luigi' not in tmpl:
            tmpl.cache[b'luigi'] = TEMPLATE
        return web.sendtemplate(b'luigi', node=ctx.hex(), rev=ctx.rev(),
                                symrev=webutil.symrevorshortnode(web.req, ctx),
                                luigibody=_ascii(body))
    title = 'luigi lineage of %s' % graph.short(node)
    res.headers[b'Content-Type'] = b'text/html; charset=utf-8'
    res.setbodybytes(_ascii(STANDALONE % {'title': _h(title), 'body': body}))
    return res.sendresponse()


# -- the link from the changeset page --------------------------------------------

# the "raw" entry of the changeset page's menu in Mercurial's HTML styles
_RAW_LINK = re.compile(
    br'(<li>)?<a href="\{url\|urlescape\}raw-rev/\{symrev\}([^"]*)">raw</a>(</li>)?')


def has_run(repo, node):
    """Whether a run is recorded at ``node`` (hex): a read-only look at the store
    that creates nothing and takes no lock; False when it cannot be read."""
    if repo.ui.config(b'luigi', b'store'):
        return _shared_has_run(repo, node)
    path = config.store_path(repo)
    if not os.path.exists(path):
        return False
    from ..core import sqlitedb  # not for every hg command, which imports this module

    try:
        db = sqlitedb.read_only(path, timeout=2)
        try:
            row = db.execute('SELECT 1 FROM runs WHERE rev = ? LIMIT 1',
                             (pycompat.sysstr(node),)).fetchone()
        finally:
            db.close()
    except sqlitedb.Error:
        return False
    return row is not None


def _shared_has_run(repo, node):
    from . import stores

    try:
        store = stores.open_store(config.Settings.read(repo.ui, repo), write=False)
    except error.Abort:
        return False
    try:
        return store.latest_run(pycompat.sysstr(node)) is not None
    finally:
        store.close()


def _link_changeset(web):
    """Add a ``luigi`` entry after ``raw`` in this request's ``changeset``
    template, when a run is recorded at the changeset shown."""
    tmpl = web.tmpl
    if b'changeset' not in tmpl:
        return
    tmpl.load(b'changeset')  # its text, into this request's templater cache
    text = tmpl.cache.get(b'changeset')
    m = _RAW_LINK.search(text or b'')
    if not m:
        return
    try:
        ctx = webutil.changectx(web.repo, web.req)
    except (error.LookupError, error.RepoLookupError):
        return  # the changeset command tells
    if not has_run(web.repo, ctx.hex()):
        return
    link = b'<a href="{url|urlescape}luigi/{symrev}%s">luigi</a>' % m.group(2)
    if m.group(1) and m.group(3):
        link = b'\n <li>%s</li>' % link
    else:
        link = b' | ' + link
    tmpl.cache[b'changeset'] = text[:m.end()] + link + text[m.end():]


def _changeset(orig, web):
    _link_changeset(web)
    return orig(web)


def extsetup(ui):
    if NAME in webcommands.__all__:
        return  # set up already (another ui of this process)
    setattr(webcommands, NAME, luigi)
    webcommands.webcommand(pycompat.bytestr(NAME))(luigi)  # __all__, hg help hgweb
    extensions.wrapfunction(webcommands, 'changeset', _changeset)
    extensions.wrapfunction(webcommands, 'rev', _changeset)

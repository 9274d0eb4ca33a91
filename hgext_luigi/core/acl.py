"""Who owns a task family, and whether an identity may build it.

Plain Python (no Mercurial, no Luigi, no I/O): the Mercurial side reads the
versioned ``.hgluigi`` file and the server configuration and passes them here
as ``str`` and tuples.

Ownership comes from the ``[owners]`` section of ``.hgluigi``::

    [owners]
    IngestOrders = alice
    Ingest* = @data-eng, bob
    * = @platform

Keys are task families or ``fnmatch`` globs, tried in file order: the first
that matches wins.  A principal is ``*`` (anyone), ``@group`` (a member of
group) or a bare ``name`` (the user ``name``, never a group: an identity
provider's groups claim must not pass for a user).  Principals are exact,
case-sensitive names, never globs.

The server's ``[luigi.acl.deny]`` rules are checked first, as Mercurial's
``acl`` extension checks deny before allow: a pushed ``.hgluigi`` cannot grant
what the server denies.  Everything here may come from anyone who can push, so
any text is accepted (non-ASCII included), no glob can raise, and the names
quoted in reasons have their control characters escaped.
"""

import configparser
import dataclasses
import fnmatch
import re
import unicodedata
from typing import Optional

SECTION = "owners"
ANYONE = "*"

# principals are separated by whitespace and/or commas
_SEPARATORS = re.compile(r"[\s,]+")
# configparser's section header (``[name]``, the rest of the line ignored)
_HEADER = configparser.ConfigParser.SECTCRE


class AclError(Exception):
    """The ownership rules cannot be read; the message says where and why."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


# --- the rules -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Rule:
    """One entry of ``[owners]``: a family glob and the principals owning what
    it matches (empty: nobody).  ``line`` is where the entry starts, if known."""

    pattern: str
    principals: tuple
    line: Optional[int] = None

    def matches(self, family):
        """Whether this rule covers ``family`` (case-sensitive; never raises)."""
        return fnmatch.fnmatchcase(family, self.pattern)


@dataclasses.dataclass(frozen=True)
class Owners:
    """The ``[owners]`` rules of one revision, in file order.  ``defined`` is
    False when the file or its ``[owners]`` section is absent: then nobody
    owns anything."""

    rules: tuple = ()
    defined: bool = False
    source: str = ".hgluigi"

    def rule_for(self, family):
        """The first rule matching ``family``, or None."""
        for rule in self.rules:
            if rule.matches(family):
                return rule
        return None

    def owners_of(self, family):
        """The principals owning ``family`` (first matching rule wins), or None
        when no rule matches."""
        rule = self.rule_for(family)
        return None if rule is None else rule.principals


def split_principals(value):
    """The principals of a configuration value: names separated by whitespace
    and/or commas.  A tuple or list is taken as already split."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(p for p in _SEPARATORS.split(value) if p)
    return tuple(value)


def parse_owners(text, source=".hgluigi"):
    """The :class:`Owners` of the ``.hgluigi`` text of one revision (``str``, or
    UTF-8 ``bytes``; None or empty when the file is absent).

    Only ``[owners]`` is read; other sections (``[watches]``) are ignored but
    must be valid INI too.  Raises :class:`AclError`, naming ``source`` and the
    line when known, for what is not UTF-8, not INI, an entry set twice (first
    match wins, so a duplicate would be ambiguous), or a principal that is an
    empty group or looks like an inline comment."""
    text = _decode(text, source)
    if not text:
        return Owners(source=source)
    parser = configparser.ConfigParser(
        interpolation=None, delimiters=("=",), strict=True,
        # a section name cannot hold a newline, so no [DEFAULT] section of the
        # file can add its keys to [owners]
        default_section="\n")
    parser.optionxform = str
    try:
        parser.read_string(text, source=source)
    except configparser.Error as e:
        raise AclError(_parse_message(e, text, source)) from None
    if not parser.has_section(SECTION):
        return Owners(source=source)
    lines = _entry_lines(text)
    rules = []
    for pattern, value in parser.items(SECTION):
        line = lines.get(pattern)
        principals = split_principals(value)
        for p in principals:
            _check_principal(p, pattern, source, line)
        rules.append(Rule(pattern, principals, line))
    return Owners(tuple(rules), True, source)


def _decode(text, source):
    """``text`` as ``str``, without a leading byte-order mark."""
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray, memoryview)):
        data = bytes(text)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise AclError(_at(source, line, "not UTF-8 text (byte 0x%02x)"
                               % data[e.start])) from None
    elif not isinstance(text, str):
        raise TypeError("the text of %s must be str or bytes, not %s"
                        % (source, type(text).__name__))
    return text[1:] if text.startswith("\ufeff") else text


def _parse_message(e, text, source):
    """A one-line message for a configparser error."""
    line = getattr(e, "lineno", None)
    if isinstance(e, configparser.MissingSectionHeaderError):
        detail = "text before the first [section] header: %s" % _quote(text, line)
    elif isinstance(e, configparser.DuplicateSectionError):
        detail = "section [%s] appears twice" % show(e.section)
    elif isinstance(e, configparser.DuplicateOptionError):
        detail = "%s is set twice in [%s]" % (show(e.option), show(e.section))
    elif isinstance(e, configparser.ParsingError) and e.errors:
        line = e.errors[0][0]
        detail = "not a 'name = value' line nor a [section] header: %s" % _quote(text, line)
    else:
        detail = " ".join(str(e).split())
    return _at(source, line, detail)


def _quote(text, line):
    """Line ``line`` of ``text``, stripped and quoted."""
    return repr(text.split("\n")[line - 1].strip())


def _at(source, line, detail):
    where = "%s, line %d" % (source, line) if line else source
    return "cannot parse %s: %s" % (where, detail)


def _check_principal(principal, pattern, source, line):
    if principal == "@":
        raise AclError(_at(source, line, "%s in [owners] names an empty group '@'"
                           % show(pattern)))
    if principal[0] in "#;":
        # configparser keeps "a = b  # c" whole: "#" and "c" would be principals
        raise AclError(_at(source, line, "%s in [owners]: comments go on their "
                           "own line, not after principals" % show(pattern)))


def _entry_lines(text):
    """{key: line number} of the ``[owners]`` entries (configparser does not
    keep line numbers), scanning lines the way configparser does."""
    lines = {}
    section = None
    in_value = False
    # configparser reads a StringIO, which splits lines on "\n" only
    for number, raw in enumerate(text.split("\n"), 1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if raw[0].isspace() and in_value:
            continue  # continuation of the previous value
        header = _HEADER.match(stripped)
        if header:
            section, in_value = header.group("header"), False
        elif "=" in stripped:
            in_value = True
            if section == SECTION:
                lines.setdefault(stripped.split("=", 1)[0].rstrip(), number)
    return lines


# --- identities and groups -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Identity:
    """Who asks: an authenticated user name (None: unknown), and the groups an
    identity provider asserted for them (a token's groups claim)."""

    user: Optional[str]
    token_groups: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "token_groups", split_principals(self.token_groups))


def groups_of(identity, server_groups):
    """The groups of ``identity``: those its token asserted, and those of the
    server's ``[luigi.groups]`` (``(group, (user, ...))`` pairs) listing it."""
    groups = set(identity.token_groups)
    if identity.user:
        for group, users in server_groups or ():
            if identity.user in split_principals(users):
                groups.add(group)
    return frozenset(groups)


def _match(principal, identity, groups):
    """How ``principal`` designates the identity (e.g. ``"as @data-eng"``), or
    None when it does not.  Exact, case-sensitive names: no globs, no Unicode
    normalization (a look-alike name is another name)."""
    if principal == ANYONE:
        return "as *, anyone"
    if principal.startswith("@"):
        group = principal[1:]
        return "as @%s" % show(group) if group and group in groups else None
    if identity.user and principal == identity.user:
        return "as %s" % show(principal)
    return None


def _first_match(principals, identity, groups):
    for p in split_principals(principals):
        how = _match(p, identity, groups)
        if how:
            return how
    return None


# --- decisions -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether ``family`` may be built by the identity, who owns it (the
    principals of its rule; () when none) and why, as a sentence."""

    allowed: bool
    family: str
    owners: tuple
    reason: str


def decide(identity, family, owners, server_groups, deny=()):
    """Whether ``identity`` may build ``family``.

    Checked in this order, deny before allow as Mercurial's ``acl`` extension
    does: the server's ``[luigi.acl.deny]`` (``deny``: ``(family glob,
    principals)`` pairs), then the first matching rule of ``owners`` (an
    :class:`Owners`; None is taken as no ``[owners]`` section).  What is not
    explicitly owned by the identity is denied."""
    owners = owners if owners is not None else Owners()
    groups = groups_of(identity, server_groups)
    rule = owners.rule_for(family) if owners.defined else None
    principals = rule.principals if rule else ()
    who, what, src = show(identity.user or "an unknown user"), show(family), owners.source

    def decision(allowed, reason):
        return Decision(allowed, family, principals, reason)

    for glob, denied in deny or ():
        if fnmatch.fnmatchcase(family, glob):
            how = _first_match(denied, identity, groups)
            if how:
                return decision(False, "%s is denied %s by the server's "
                                "[luigi.acl.deny] (%s)" % (who, show(glob), how))
    if not owners.defined:
        return decision(False, "the revision has no [owners] section in %s, so "
                        "nobody owns %s" % (src, what))
    if rule is None:
        return decision(False, "no rule of [owners] in %s matches %s" % (src, what))
    if not principals:
        return decision(False, "nobody owns %s: its rule %s of [owners] in %s%s "
                        "names no one" % (what, show(rule.pattern), src, _line(rule)))
    how = _first_match(principals, identity, groups)
    if how:
        return decision(True, "%s owns %s (%s)" % (who, what, how))
    return decision(False, "%s is owned by %s; %s is not one of them"
                    % (what, ", ".join(show(p) for p in principals), who))


def _line(rule):
    return " (line %d)" % rule.line if rule.line else ""


def may_force(identity, allow_force, server_groups):
    """Whether ``identity`` may ask to rebuild everything: it is designated by
    a principal of the server's ``[luigi.acl] allow-force`` (empty: nobody)."""
    return _first_match(allow_force, identity, groups_of(identity, server_groups)) is not None


def check_all(identity, families, owners_list, server_groups, deny=()):
    """The denied :class:`Decision` of each family ``identity`` may not build.

    ``owners_list`` holds the :class:`Owners` of several revisions (the parents
    of a merge): a family is allowed only if every one allows it, so a push
    cannot take over a family by changing ``.hgluigi`` on one side; an empty
    list owns nothing.  A denial keeps the reason of the first Owners that
    denies, and the principals found under all of them."""
    owners_list = list(owners_list) or [Owners()]
    out = []
    for family in dict.fromkeys(families):  # once each, in order
        decisions = [decide(identity, family, o, server_groups, deny) for o in owners_list]
        denied = next((d for d in decisions if not d.allowed), None)
        if denied:
            found = dict.fromkeys(p for d in decisions for p in d.owners)
            out.append(dataclasses.replace(denied, owners=tuple(found)))
    return out


# --- display ---------------------------------------------------------------

def show(name):
    """``name`` for a message: non-ASCII letters kept; control, format (bidi
    overrides...) and separator characters escaped, so a crafted name cannot
    drive a terminal or disguise itself."""
    return "".join(_escape(c) for c in str(name))


def _escape(c):
    category = unicodedata.category(c)
    if category[0] == "C" or category in ("Zl", "Zp"):
        code = ord(c)
        return ("\\x%02x" if code < 0x100 else "\\u%04x" if code < 0x10000
                else "\\U%08x") % code
    return c

"""Task ownership and access decisions (``hgext_luigi.core.acl``): pure Python, fast.

Ownership is the first matching rule of ``[owners]`` in ``.hgluigi``; the
server's deny rules come first; what nobody explicitly owns is denied.
"""

import pytest

from hgext_luigi.core.acl import AclError, Decision, Identity, Owners, check_all, decide, groups_of, may_force, parse_owners, show, split_principals

OWNERS = """\
[watches]
IngestOrders = data/orders/*.csv

[owners]
IngestOrders = alice
Ingest* = @data-eng, bob
Load*   = carol dave
  erin
Report? = reporting
Orphan =
* = @platform
"""

SERVER_GROUPS = (
    ("data-eng", ("frank", "grace")),
    ("platform", ("heidi",)),
    ("reporting", ("ivan",)),
)


@pytest.fixture
def owners():
    return parse_owners(OWNERS)


def allowed(user, family, owners, groups=SERVER_GROUPS, token=(), deny=()):
    return decide(Identity(user, token), family, owners, groups, deny).allowed


# --- parsing -----------------------------------------------------------------

def test_rules_in_file_order_other_sections_ignored(owners):
    assert owners.defined
    assert [r.pattern for r in owners.rules] == [
        "IngestOrders", "Ingest*", "Load*", "Report?", "Orphan", "*"]
    assert [r.line for r in owners.rules] == [5, 6, 7, 9, 10, 11]


def test_first_match_wins(owners):
    # IngestOrders also matches Ingest* and *, but its own rule comes first
    assert owners.owners_of("IngestOrders") == ("alice",)
    assert owners.owners_of("IngestClicks") == ("@data-eng", "bob")
    assert allowed("alice", "IngestOrders", owners)
    assert not allowed("bob", "IngestOrders", owners)
    assert not allowed("frank", "IngestOrders", owners)
    assert not allowed("alice", "IngestClicks", owners)


def test_first_match_wins_even_before_a_more_specific_rule():
    owners = parse_owners("[owners]\n* = @platform\nIngestOrders = alice\n")
    assert owners.owners_of("IngestOrders") == ("@platform",)
    assert not allowed("alice", "IngestOrders", owners)


def test_globs(owners):
    assert owners.owners_of("Report1") == ("reporting",)
    assert owners.owners_of("Report12") == ("@platform",)   # ? is one character
    assert owners.owners_of("ingestclicks") == ("@platform",)  # case-sensitive


def test_catch_all(owners):
    assert owners.owners_of("Anything") == ("@platform",)
    assert allowed("heidi", "Anything", owners)
    assert not allowed("alice", "Anything", owners)


def test_no_rule_matches():
    owners = parse_owners("[owners]\nIngest* = alice\n")
    assert owners.owners_of("Load") is None
    d = decide(Identity("alice"), "Load", owners, ())
    assert not d.allowed
    assert d.owners == ()
    assert d.reason == "no rule of [owners] in .hgluigi matches Load"


def test_comma_and_whitespace_separated_principals(owners):
    assert owners.owners_of("LoadX") == ("carol", "dave", "erin")  # continuation line
    assert parse_owners("[owners]\nA = a,b , c\t d,,e\n").owners_of("A") == (
        "a", "b", "c", "d", "e")
    assert split_principals(" a, b\n@c ") == ("a", "b", "@c")


def test_empty_principal_list_nobody_owns(owners):
    assert owners.owners_of("Orphan") == ()
    d = decide(Identity("heidi"), "Orphan", owners, SERVER_GROUPS)
    assert not d.allowed
    assert d.owners == ()
    assert "nobody owns Orphan" in d.reason and "line 10" in d.reason


@pytest.mark.parametrize("text", [None, "", b"", "[watches]\nA = x\n", "# nothing\n"])
def test_no_owners_section(text):
    owners = parse_owners(text)
    assert owners == Owners()
    assert not owners.defined and owners.rules == ()
    assert owners.owners_of("Load") is None
    d = decide(Identity("alice"), "Load", owners, ())
    assert not d.allowed
    assert "no [owners] section in .hgluigi" in d.reason
    assert "nobody owns Load" in d.reason


def test_owners_is_immutable(owners):
    with pytest.raises(AttributeError):
        owners.rules = ()
    assert isinstance(owners.rules, tuple)


def test_default_section_does_not_add_rules():
    owners = parse_owners("[DEFAULT]\nLoad = mallory\n[owners]\nIngest = alice\n")
    assert owners.owners_of("Load") is None


def test_bytes_and_bom_accepted():
    owners = parse_owners("\ufeff[owners]\nCafé* = @équipe\n".encode("utf-8"))
    assert owners.owners_of("CaféNoir") == ("@équipe",)


# --- parse errors ------------------------------------------------------------

@pytest.mark.parametrize("text, line, words", [
    ("[owners]\nA = x\ngarbage\n", 3, "'garbage'"),
    ("junk\n[owners]\n", 1, "before the first [section]"),
    ("[owners]\nA = x\nB = y\nA = z\n", 4, "A is set twice in [owners]"),
    ("[owners]\nA = x\n[owners]\n", 3, "section [owners] appears twice"),
    ("[owners]\nA = x  # comment\n", 2, "comments go on their own line"),
    ("[owners]\nA = ; comment\n", 2, "comments go on their own line"),
    ("[owners]\n\nA = @ bob\n", 3, "empty group"),
    ("[owners]\n = x\n", 2, "name = value"),
    ("[watches]\nW = p\nW = q\n[owners]\n", 3, "W is set twice in [watches]"),
])
def test_parse_error_names_source_and_line(text, line, words):
    with pytest.raises(AclError) as e:
        parse_owners(text, source="pipelines/.hgluigi")
    message = str(e.value)
    assert message.startswith("cannot parse pipelines/.hgluigi, line %d: " % line)
    assert words in message
    assert "\n" not in message


def test_bytes_not_utf8():
    with pytest.raises(AclError) as e:
        parse_owners(b"[owners]\nLoad = caf\xe9\n")
    assert str(e.value) == "cannot parse .hgluigi, line 2: not UTF-8 text (byte 0xe9)"


def test_not_text_is_a_type_error():
    with pytest.raises(TypeError):
        parse_owners(42)


# --- principals, users and groups --------------------------------------------

def test_at_group_matches_members_only():
    owners = parse_owners("[owners]\nLoad = @data-eng\n")
    assert allowed("frank", "Load", owners)                 # server group member
    assert not allowed("data-eng", "Load", owners)          # a user of that name is not
    assert not allowed("alice", "Load", owners)


def test_bare_name_is_a_user_never_a_group():
    owners = parse_owners("[owners]\nLoad = data-eng\nIngest = bob\n")
    assert allowed("data-eng", "Load", owners)               # the user
    assert not allowed("grace", "Load", owners)              # a member of the group: no
    assert allowed("bob", "Ingest", owners)
    # a token whose groups claim says "bob" does not pass for the user bob
    assert not allowed("zed", "Ingest", owners, token=("bob",))
    assert not allowed("alice", "Load", owners)


def test_star_principal_is_anyone():
    owners = parse_owners("[owners]\nPublic = *\n")
    assert allowed("anyone", "Public", owners, groups=())
    assert allowed(None, "Public", owners, groups=())


def test_token_groups_and_server_groups():
    ident = Identity("zed", ("analysts", "data-eng"))
    assert groups_of(ident, SERVER_GROUPS) == frozenset({"analysts", "data-eng"})
    assert groups_of(Identity("frank"), SERVER_GROUPS) == frozenset({"data-eng"})
    assert groups_of(Identity("frank", ("x",)), SERVER_GROUPS) == {"data-eng", "x"}
    owners = parse_owners("[owners]\nLoad = @data-eng\n")
    assert allowed("zed", "Load", owners, token=("data-eng",))  # token only
    assert allowed("frank", "Load", owners)                     # server only
    assert not allowed("zed", "Load", owners)


def test_names_are_case_sensitive():
    owners = parse_owners("[owners]\nLoad = Alice @Data\n")
    assert not allowed("alice", "Load", owners, groups=())
    assert not allowed("bob", "Load", owners, groups=(), token=("data",))
    assert allowed("Alice", "Load", owners, groups=())
    assert allowed("bob", "Load", owners, groups=(), token=("Data",))


def test_unknown_user_is_nobody():
    owners = parse_owners("[owners]\nLoad = alice\n")
    assert groups_of(Identity(None), (("g", ("",)),)) == frozenset()
    assert not allowed(None, "Load", owners)
    assert not allowed("", "Load", owners)


def test_identity_is_frozen_and_keeps_a_tuple():
    ident = Identity("alice", ["a", "b"])
    assert ident.token_groups == ("a", "b")
    with pytest.raises(AttributeError):
        ident.user = "mallory"


def test_principals_are_not_globs():
    owners = parse_owners("[owners]\nLoad = al* @data*\n")
    assert not allowed("alice", "Load", owners, groups=(), token=("data-eng",))


# --- decisions and reasons ---------------------------------------------------

def test_allowed_reason_says_how(owners):
    d = decide(Identity("frank"), "IngestClicks", owners, SERVER_GROUPS)
    assert d == Decision(True, "IngestClicks", ("@data-eng", "bob"),
                         "frank owns IngestClicks (as @data-eng)")
    d = decide(Identity("bob"), "IngestClicks", owners, SERVER_GROUPS)
    assert d.reason == "bob owns IngestClicks (as bob)"


def test_denied_reason_lists_owners(owners):
    d = decide(Identity("alice"), "IngestClicks", owners, SERVER_GROUPS)
    assert not d.allowed
    assert d.reason == "IngestClicks is owned by @data-eng, bob; alice is not one of them"


def test_deny_before_allow(owners):
    deny = (("Load*", ("carol",)),)
    d = decide(Identity("carol"), "LoadX", owners, SERVER_GROUPS, deny)
    assert not d.allowed
    assert d.reason.startswith("carol is denied Load* by the server's [luigi.acl.deny]")
    assert d.owners == ("carol", "dave", "erin")
    assert allowed("dave", "LoadX", owners, deny=deny)


def test_deny_by_group_and_star(owners):
    assert not allowed("frank", "IngestClicks", owners, deny=(("*", ("@data-eng",)),))
    assert not allowed("zed", "Anything", owners, token=("platform",),
                       deny=(("Any*", ("@platform",)),))
    assert not allowed("heidi", "Anything", owners, deny=(("*", ("*",)),))
    # a deny rule for another family, or other principals, does not apply
    assert allowed("heidi", "Anything", owners, deny=(("Load*", ("*",)), ("*", ("bob",))))


def test_deny_applies_without_owners_section():
    d = decide(Identity("alice"), "Load", parse_owners(None), (), (("*", ("alice",)),))
    assert "denied" in d.reason and "[luigi.acl.deny]" in d.reason


# --- several revisions -------------------------------------------------------

def test_check_all_requires_every_owners():
    p1 = parse_owners("[owners]\nLoad = alice\nIngest = alice\n* = bob\n")
    p2 = parse_owners("[owners]\nLoad = alice\nIngest = mallory\n")
    denied = check_all(Identity("alice"), ["Load", "Ingest", "Report"], [p1, p2], ())
    assert [d.family for d in denied] == ["Ingest", "Report"]
    ingest, report = denied
    assert ingest.reason == "Ingest is owned by mallory; alice is not one of them"
    assert ingest.owners == ("alice", "mallory")         # union over both parents
    assert report.reason == "Report is owned by bob; alice is not one of them"
    assert report.owners == ("bob",)
    assert check_all(Identity("alice"), ["Load"], [p1, p2], ()) == []


def test_check_all_first_denying_owners_gives_the_reason():
    p1 = parse_owners("[owners]\nLoad = bob\n")
    p2 = parse_owners("[watches]\n")
    (d,) = check_all(Identity("alice"), ["Load"], [p2, p1], ())
    assert "no [owners] section" in d.reason
    assert d.owners == ("bob",)


def test_check_all_empty_list_denies():
    (d,) = check_all(Identity("alice"), ["Load", "Load"], [], ())
    assert not d.allowed and "no [owners] section" in d.reason


def test_check_all_deny():
    p = parse_owners("[owners]\n* = alice\n")
    denied = check_all(Identity("alice"), ["Load", "Ingest"], [p, p], (),
                       deny=(("Load", ("alice",)),))
    assert [d.family for d in denied] == ["Load"]


# --- force -------------------------------------------------------------------

def test_may_force():
    assert not may_force(Identity("alice"), (), SERVER_GROUPS)
    assert may_force(Identity("alice"), ("alice",), ())
    assert may_force(Identity("heidi"), ("@platform",), SERVER_GROUPS)
    assert may_force(Identity("zed", ("ops",)), ("@ops",), ())
    assert not may_force(Identity("zed", ("alice",)), ("alice",), ())  # a group is no user
    assert may_force(Identity("zed"), ("*",), ())
    assert not may_force(Identity("zed"), ("alice", "@platform"), SERVER_GROUPS)
    assert not may_force(Identity("Alice"), ("alice",), ())


# --- hostile input -----------------------------------------------------------

def test_non_ascii_family_and_user():
    owners = parse_owners("[owners]\nCafé* = @équipe\nNaïve = zoë\n")
    assert allowed("zoë", "CaféCrème", owners, groups=(("équipe", ("zoë",)),))
    assert allowed("zoë", "Naïve", owners, groups=())
    d = decide(Identity("zoë"), "CaféCrème", owners, ())
    assert d.reason == "CaféCrème is owned by @équipe; zoë is not one of them"
    # another normalization of the same letters is another name
    assert not allowed("zo\u0065\u0308", "Naïve", owners, groups=())


@pytest.mark.parametrize("glob", ["[", "[!", "[]", "[z-a]", "**[*?", "\\", "(?P<x>",
                                  "[[:alpha:]]", "*" * 200 + "x", "*a" * 200 + "b"])
def test_crafted_globs_do_not_raise(glob):
    # "L" first: an INI line starting with "[" is a section header
    owners = parse_owners("[owners]\nL%s = alice\n* = bob\n" % glob)
    assert owners.owners_of("Load" * 50) in (("alice",), ("bob",))
    deny = ((glob, ("*",)),)
    assert isinstance(decide(Identity("bob"), "Load", owners, (), deny), Decision)


def test_reasons_escape_control_characters():
    owners = parse_owners("[owners]\n* = alice\n")
    d = decide(Identity("mallory\x1b[2J"), "Load\u202eevil\r", owners, ())
    assert d.family == "Load\u202eevil\r"                 # the data itself is kept
    assert "\x1b" not in d.reason and "\u202e" not in d.reason and "\r" not in d.reason
    assert "mallory\\x1b[2J" in d.reason and "Load\\u202eevil\\x0d" in d.reason
    assert show("Café zoë") == "Café zoë"

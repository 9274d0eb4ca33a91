"""core.objects: S3 output roots and keys (the pure parts), and the lineage
store keeping S3 outputs relative to an S3 output root.  Reading objects is
tested against a real moto_server in tests/test_s3_outputs.py."""

import os

import pytest

from hgext_luigi.core import audit, lineage, objects

A = "a" * 40


@pytest.mark.parametrize("url, root", [
    ("s3://bucket", "s3://bucket"),
    ("s3://bucket/", "s3://bucket"),
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("s3://bucket/prefix/", "s3://bucket/prefix"),
    ("s3://my.bucket-1/a/b c/ünï", "s3://my.bucket-1/a/b c/ünï"),
])
def test_good_roots_are_kept_as_written(url, root):
    assert objects.check_root(url) == root


@pytest.mark.parametrize("url, why", [
    ("s3://", "no bucket name"),
    ("s3:///prefix", "no bucket name"),
    ("s3://ab/x", "3-63 lowercase"),
    ("s3://Bucket/x", "3-63 lowercase"),
    ("s3://bucket_1/x", "3-63 lowercase"),
    ("s3://-bucket/x", "3-63 lowercase"),
    ("s3://%s/x" % ("b" * 64), "3-63 lowercase"),
    ("s3://a..b/x", "two separators"),
    ("s3://a.-b/x", "two separators"),
    ("s3://192.168.1.10/x", "IP address"),
    ("s3://xn--bucket/x", "reserves"),
    ("s3://bucket-s3alias/x", "reserves"),
    ("s3://bucket/../x", "'..' segment"),
    ("s3://bucket/a/../../x", "'..' segment"),
    ("s3://bucket/a/./x", "'.' segment"),
    ("s3://bucket/a//x", "'//' segment"),
    ("s3://bucket//x", "'//' segment"),
    ("s3://bucket/a\nb", "control character"),
    ("gs://bucket/x", "not an s3:// URL"),
])
def test_bad_roots_say_what_is_wrong(url, why):
    with pytest.raises(ValueError, match=why.replace(".", r"\.")):
        objects.check_root(url)


def test_urls_and_schemes():
    assert objects.is_url("s3://b/k") and not objects.is_url("/s3://b")
    assert not objects.is_url(None) and not objects.is_url(b"s3://b/k")
    assert objects.has_scheme("gs://b") and objects.has_scheme("S3://b")
    assert not objects.has_scheme("outputs/s3:x") and not objects.has_scheme("/abs/path")


def test_split_and_join_are_inverse():
    url = objects.join("s3://bucket/prefix", A, "clean/sales north.csv")
    assert url == "s3://bucket/prefix/%s/clean/sales north.csv" % A
    assert objects.split(url) == ("bucket", "prefix/%s/clean/sales north.csv" % A)
    assert objects.split("s3://bucket") == ("bucket", "")
    assert objects.join("s3://bucket/", A, "x") == "s3://bucket/%s/x" % A
    assert objects.relative_to(url, "s3://bucket/prefix") == "%s/clean/sales north.csv" % A
    with pytest.raises(ValueError):
        objects.split("/local/path")


@pytest.mark.parametrize("part", ["../x", "a/../../x", "", ".", "a//b", "/abs", "a\x1bb"])
def test_join_never_leaves_the_root(part):
    with pytest.raises(ValueError, match="cannot put"):
        objects.join("s3://bucket/prefix", A, part)


@pytest.mark.parametrize("path, root, rel", [
    ("s3://b1x/p/k", "s3://b1x/p", "k"),
    ("s3://b1x/p/a/b", "s3://b1x/p/", "a/b"),
    ("s3://b1x/k", "s3://b1x", "k"),
    ("s3://b1x/p", "s3://b1x/p", None),            # the root itself
    ("s3://b1x/p/", "s3://b1x/p", None),
    ("s3://b1x/prefix/k", "s3://b1x/p", None),     # a sibling sharing the start
    ("s3://b2x/p/k", "s3://b1x/p", None),          # another bucket
    ("/local/p/k", "s3://b1x/p", None),
    ("s3://b1x/p/k", "/local/p", None),
])
def test_relative_to_a_root(path, root, rel):
    assert objects.relative_to(path, root) == rel


def test_walk_order_is_the_order_of_a_local_directory_digest(tmp_path):
    names = ["b.txt", "a/z.txt", "a/b/c.txt", "a/a.txt", "A.txt", "c/d/e/f", "ab", "a b/x"]
    for n in names:
        p = tmp_path / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(n)
    walked = []
    for top, dirs, files in os.walk(tmp_path):
        dirs.sort()
        walked += [os.path.relpath(os.path.join(top, f), tmp_path) for f in sorted(files)]
    assert sorted(names, key=objects.walk_order) == walked


def test_the_lineage_store_keeps_s3_outputs_relative_to_an_s3_root(tmp_path):
    store = lineage.open_store(str(tmp_path / "lineage.db"), "s3://bucket/prefix/",
                               audit.Chain())
    try:
        assert store.output_root == "s3://bucket/prefix"
        inside = "s3://bucket/prefix/%s/clean.csv" % A
        elsewhere = "s3://other-bucket/x/%s.csv" % A
        local = str(tmp_path / "plain" / "legacy.txt")
        assert store._stored(inside) == "%s/clean.csv" % A
        assert store._stored(elsewhere) == elsewhere
        assert store._stored(local) == local
        assert store._absolute("%s/clean.csv" % A) == inside
        assert store._absolute(elsewhere) == elsewhere and store._absolute(local) == local
        b = store.start_build("r1", "Clean__aaaa", "Clean()", "Clean", {}, A, None, [],
                              "alice", "manual")
        paths = [inside, elsewhere, local]
        store.finish_build(b, "success", outputs=[
            {"path": p, "size": 1, "sha256": "1" * 64} for p in paths])
        assert sorted(o["path"] for o in store.outputs(b)) == sorted(paths)
        for p in paths:
            assert [x["id"] for x in store.builds_producing(p)] == [b]
        assert store.builds_producing("s3://bucket/prefix/%s/other.csv" % A) == []
        rows = store._db.execute("SELECT path FROM outputs").fetchall()
        stored = ["%s/clean.csv" % A, elsewhere, local]
        assert sorted(r["path"] for r in rows) == sorted(stored)
    finally:
        store.close()

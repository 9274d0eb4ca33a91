"""The documentation tells every option the code reads: README's table,
hgrc.example and hg help hgext_luigi."""

import os
import re

from conftest import ROOT


def options():
    from hgext_luigi.hg import config

    return sorted((s.decode(), n.decode()) for s, items in config.configtable.items()
                  for n in items)


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def test_every_option_is_documented(hg, tmp_path):
    readme, example = read("README.md"), read("hgrc.example")
    help_text = hg("help", "hgext_luigi", cwd=str(tmp_path)).stdout
    for section, name in options():
        if name == ".*":  # a section of free names: the section is documented
            assert "[%s]" % section in example and "[%s]" % section in readme
            assert "[%s]" % section in help_text, section
            continue
        assert re.search(r"^#? ?%s =" % re.escape(name), example, re.M), \
            "%s.%s missing from hgrc.example" % (section, name)
        assert "`%s`" % name in readme or "`[%s] %s" % (section, name) in readme, \
            "%s.%s missing from README.md" % (section, name)
        assert name in help_text, "%s.%s missing from hg help hgext_luigi" % (section, name)

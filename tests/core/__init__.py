"""Unit tests of hgext_luigi.core: no Mercurial, no Luigi."""

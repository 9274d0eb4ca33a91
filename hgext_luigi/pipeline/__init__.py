"""The side that runs in the pipeline subprocess: ``str``, Luigi.

``python -m hgext_luigi.pipeline.loader`` lists the task graph of a tree;
``python -m hgext_luigi.pipeline.runner`` builds the planned tasks.  Both talk
to the hg process only through the protocol of :mod:`hgext_luigi.core.protocol`
and never import Mercurial.
"""

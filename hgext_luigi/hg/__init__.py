"""The side that runs inside ``hg``: bytes, ``ui``, ``repo``.

Commands, hooks, the worker and the callback; planning a revision against its
history; materializing trees; starting pipeline subprocesses and following
them.  Options are read once into :class:`config.Settings`, where bytes from
Mercurial become the ``str`` the rest of the code speaks.
"""

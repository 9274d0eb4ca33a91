"""How plans and runs look: the labels ``hg`` colors (``[color]`` may
restyle them, as for core commands)."""

colortable = {
    b'luigi.task': b'bold',
    b'luigi.status.affected': b'yellow',
    b'luigi.status.unaffected': b'green',
    b'luigi.status.external': b'cyan',
    b'luigi.outcome.ran': b'green',
    b'luigi.outcome.reused': b'none',
    b'luigi.outcome.failed': b'red bold',
    b'luigi.outcome.not-run': b'yellow',
}

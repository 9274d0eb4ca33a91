"""An unrelated task: an index of the documentation pages."""

import os

from hgext_luigi import HgTask


class DocsIndex(HgTask):
    """Title and word count of every page under docs/."""

    watches = ["docs/**"]

    def output(self):
        return self.stamped_target("docs/index.txt")

    def run(self):
        root = self.source_path("docs")
        lines = []
        for top, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(top, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                title = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.strip()), name)
                lines.append("%s\t%s\t%d words" % (os.path.relpath(path, root), title, len(text.split())))
        with self.output().open("w") as f:
            f.write("\n".join(lines) + "\n")

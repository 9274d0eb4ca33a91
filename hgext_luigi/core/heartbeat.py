"""A thread that keeps a claim alive while a build runs: a queue entry's
lease (``hg luigi-worker``), a Step Functions task token and the visibility of
its SQS message (``hg luigi-callback``)."""

import threading


class Heartbeat(threading.Thread):
    """Calls ``beat()`` every ``every`` seconds until :meth:`stop`.  ``beat``
    returning False, or raising, means the claim is lost: :attr:`lost` says
    why, and beating goes on only when ``keep_going`` (an AWS error may pass;
    a lease another worker took will not come back)."""

    def __init__(self, name, every, beat, keep_going=False):
        super().__init__(name=name, daemon=True)
        self.every, self.beat, self.keep_going = every, beat, keep_going
        self.stopped = threading.Event()
        self.lost = None

    def run(self):
        while not self.stopped.wait(self.every):
            try:
                if self.beat() is not False:
                    continue
                self.lost = "the claim was taken over"
            except Exception as e:
                self.lost = str(e) or type(e).__name__
            if not self.keep_going:
                return

    def stop(self):
        self.stopped.set()
        self.join()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

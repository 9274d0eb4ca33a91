"""A thread that keeps a claim alive while a build runs: a queue entry's
lease (``hg luigi-worker``), a Step Functions task token and the visibility of
its SQS message (``hg luigi-callback``)."""

import threading


class Heartbeat(threading.Thread):
    """Calls ``beat()`` every ``every`` seconds until :meth:`stop`.  ``beat``
    returning False means the claim is lost for good; raising, that this beat
    failed (an AWS or database error may pass: beating goes on with
    ``keep_going``).  :attr:`lost` says why."""

    def __init__(self, name, every, beat, keep_going=False, close=None):
        """``close()``, when given, runs in the thread once it stops beating
        (what ``beat`` opened in the thread, closed there)."""
        super().__init__(name=name, daemon=True)
        self.every, self.beat, self.keep_going = every, beat, keep_going
        self.close = close
        self.stopped = threading.Event()
        self.lost = None

    def run(self):
        try:
            self._beat_until_stopped()
        finally:
            if self.close is not None:
                self.close()

    def _beat_until_stopped(self):
        while not self.stopped.wait(self.every):
            try:
                if self.beat() is not False:
                    continue
                self.lost = "the claim was taken over"
                return  # it will not come back
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

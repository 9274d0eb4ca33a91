"""A real ``moto_server`` on a free loopback port, with state machines executed.

Used by the tests and by ``make demo``: AWS APIs over real HTTP through boto3,
no in-process patching.  ``env()`` gives what a process needs to talk to it
through boto3's standard configuration (endpoint, region, dummy credentials).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_moto_server():
    here = os.path.join(os.path.dirname(sys.executable), "moto_server")
    return here if os.path.exists(here) else shutil.which("moto_server")


class MotoServer:
    def __init__(self, region="us-east-1"):
        exe = find_moto_server()
        if not exe:
            raise RuntimeError("moto_server not found (pip install 'moto[server]')")
        self.region = region
        self.port = _free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).read()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.1)
        req = urllib.request.Request(
            self.url + "/moto-api/config", method="POST",
            data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()

    def env(self):
        return {"AWS_ENDPOINT_URL": self.url, "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self, service):
        import boto3

        e = self.env()
        return boto3.client(service, endpoint_url=self.url, region_name=self.region,
                            aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

"""An S3-compatible server on loopback, for the multi-host test and the latent storage benchmark.

moto's standalone server (``python -m moto.server``) runs as a child process on a free 127.0.0.1 port, with
one bucket, until :meth:`LoopbackS3.stop` — the way the test session runs its embedded PostgreSQL and
Redis. :meth:`LoopbackS3.storage_env` is what a process needs in its environment to keep its images and
latents there (``T2I_STORAGE=s3``; webapp/settings.py). Not for production: use MinIO or S3 itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from webapp.stack.services import free_port

ACCESS_KEY = "loopback"  # moto accepts any credentials; boto3 still wants some
SECRET_KEY = "loopback-secret"
REGION = "us-east-1"


class LoopbackS3:
    """moto's S3 server as a child process, with ``bucket`` created."""

    def __init__(self, bucket: str = "t2i", port: int | None = None, log_path: Path | None = None) -> None:
        self.bucket = bucket
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def start(self, timeout: float = 60.0) -> LoopbackS3:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - child's
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it and nothing else
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        if log is not subprocess.DEVNULL:
            log.close()  # the child holds its own copy
        deadline = time.monotonic() + timeout
        while not self._listening():  # then one create_bucket, not botocore's retries against a closed port
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server not listening on {self.endpoint_url} after {timeout} s")
            time.sleep(0.05)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def storage_env(self, prefix: str = "") -> dict[str, str]:
        """Environment for a process that keeps its images and latents in this server's bucket."""
        return {
            "T2I_STORAGE": "s3",
            "T2I_S3_BUCKET": self.bucket,
            "T2I_S3_PREFIX": prefix,
            "T2I_S3_ENDPOINT_URL": self.endpoint_url,
            "T2I_S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

"""A fake S3 (and every other AWS API moto knows): moto's standalone server on 127.0.0.1.

Import the fixture where it is needed, in a test module or a conftest:

    from tests.fakes.moto_server import moto_endpoint  # noqa: F401  (a fixture: pytest finds it by name)

boto3 clients reach it with `endpoint_url=moto_endpoint`. For the whole session, the environment
holds fake credentials and a region, and no AWS profile or shared file, so that no test can use
real credentials or talk to real AWS by mistake.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # A developer's ~/.aws must not change what the tests see.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The URL of a moto server that lives for the test session."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_AWS_ENV.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
            env.delenv(name, raising=False)
        # Port 0: the operating system picks a free port, with no race against other processes.
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()

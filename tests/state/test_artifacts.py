"""Both artifact stores, a local directory and S3 (moto's server), pass the same tests."""

from __future__ import annotations

import os
import pickle
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from state.artifacts import (
    ArtifactInfo,
    ArtifactNotFound,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    open_artifacts,
)
from tests.fakes.moto_server import moto_endpoint  # noqa: F401  (a fixture: pytest finds it by name)

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "acme/../../outside",
    "acme/wf_1/..",
    "acme/./wf_1",
    ".",
    "acme//wf_1",
    "acme/wf_1/",
    "..\\outside",
    "acme\\wf_1",
    "acme/wf\x00_1",
    "acme/wf\n_1",
    "a" * 1025,
]


@pytest.fixture(scope="module")
def s3(moto_endpoint: str) -> Any:  # noqa: F811
    """A boto3 client of the tests' own, to look behind the store's back."""
    return boto3.client("s3", endpoint_url=moto_endpoint)


@pytest.fixture()
def s3_bucket(s3: Any) -> Iterator[str]:
    """A new bucket, emptied and deleted after the test."""
    bucket = f"test-{uuid.uuid4().hex}"
    s3.create_bucket(Bucket=bucket)
    yield bucket
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        if page.get("Contents"):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": item["Key"]} for item in page["Contents"]]})
    s3.delete_bucket(Bucket=bucket)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    return S3ArtifactStore(request.getfixturevalue("s3_bucket"), endpoint_url=request.getfixturevalue("moto_endpoint"))


def test_round_trip_with_content_type(store: ArtifactStore) -> None:
    info = store.put("acme/wf_1/outputs/write", b"hello\nworld", "text/plain; charset=utf-8")
    assert info == ArtifactInfo("acme/wf_1/outputs/write", "text/plain; charset=utf-8", 11)
    assert store.get("acme/wf_1/outputs/write") == (b"hello\nworld", "text/plain; charset=utf-8")
    assert store.info("acme/wf_1/outputs/write") == info
    assert store.info("acme/wf_1/outputs/other") is None


def test_empty_artifact(store: ArtifactStore) -> None:
    assert store.put("acme/uploads/empty", b"", "application/octet-stream").bytes == 0
    assert store.get("acme/uploads/empty") == (b"", "application/octet-stream")
    assert store.info("acme/uploads/empty") == ArtifactInfo("acme/uploads/empty", "application/octet-stream", 0)


def test_overwrite_replaces_bytes_and_content_type(store: ArtifactStore) -> None:
    store.put("acme/wf_1/outputs/pic", b"a much longer first version", "text/plain")
    store.put("acme/wf_1/outputs/pic", b"\x89PNG", "image/png")
    assert store.get("acme/wf_1/outputs/pic") == (b"\x89PNG", "image/png")
    assert store.info("acme/wf_1/outputs/pic") == ArtifactInfo("acme/wf_1/outputs/pic", "image/png", 4)


def test_delete_is_idempotent(store: ArtifactStore) -> None:
    store.put("acme/uploads/up_1", b"x", "text/plain")
    store.delete("acme/uploads/up_1")
    assert store.info("acme/uploads/up_1") is None
    store.delete("acme/uploads/up_1")
    store.delete("acme/never/existed")


def test_not_found(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFound) as caught:
        store.get("acme/wf_1/outputs/missing")
    assert caught.value.key == "acme/wf_1/outputs/missing"
    assert isinstance(caught.value, LookupError) and caught.value.code == "not_found"
    copy = pickle.loads(pickle.dumps(caught.value))  # raised across Ray's process boundary
    assert isinstance(copy, ArtifactNotFound) and copy.key == caught.value.key and str(copy) == str(caught.value)


def test_delete_prefix_deletes_that_folder_only(store: ArtifactStore) -> None:
    inside = ["acme/wf_1", "acme/wf_1/inputs/a", "acme/wf_1/outputs/a", "acme/wf_1/outputs/deep/b"]
    outside = ["acme/wf_10/outputs/a", "acme/wf_1x", "acme/wf_", "other/wf_1/outputs/a", "acme/wf_2/outputs/a"]
    for key in inside + outside:
        store.put(key, key.encode(), "text/plain")
    assert store.delete_prefix("acme/wf_1") == len(inside)
    assert [key for key in inside if store.info(key) is not None] == []
    assert all(store.get(key) == (key.encode(), "text/plain") for key in outside)
    assert store.delete_prefix("acme/wf_1") == 0
    assert store.delete_prefix("acme/wf_2") == 1
    assert store.delete_prefix("nobody") == 0


def test_a_key_can_also_be_a_folder_and_odd_characters_are_kept(store: ArtifactStore) -> None:
    keys = ["a/b", "a/b/c", "a/b@artifact", "a/%40", "a/@", "a/b c/ü €", "a/.hidden", "a/...", "a/~"]
    for key in keys:
        store.put(key, key.encode(), "text/plain")
    assert all(store.get(key) == (key.encode(), "text/plain") for key in keys)
    assert store.delete_prefix("a/b") == 2
    assert store.info("a/b@artifact") is not None
    assert store.delete_prefix("a") == len(keys) - 2


@pytest.mark.parametrize("key", BAD_KEYS)
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_keys_that_could_escape_are_refused(kind: str, key: str, tmp_path: Path) -> None:
    # Nothing listens on the S3 endpoint: a refused key must never reach the network.
    store: ArtifactStore = (
        LocalArtifactStore(tmp_path / "artifacts") if kind == "local" else S3ArtifactStore("b", "http://127.0.0.1:9")
    )
    calls = [
        lambda: store.put(key, b"x", "text/plain"),
        lambda: store.get(key),
        lambda: store.info(key),
        lambda: store.delete(key),
        lambda: store.delete_prefix(key),
        lambda: store.url(key),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    if isinstance(store, LocalArtifactStore):
        assert [p.name for p in tmp_path.iterdir()] == ["artifacts"]
        assert list(store.root.iterdir()) == []


@pytest.mark.parametrize("content_type", ["", "text/plain\nX-Evil: 1", "text/plain\x00", "tëxt/plain", "x" * 256])
def test_bad_content_types_are_refused(store: ArtifactStore, content_type: str) -> None:
    with pytest.raises(ValueError):
        store.put("acme/uploads/up_1", b"x", content_type)
    assert store.info("acme/uploads/up_1") is None


def test_url(store: ArtifactStore) -> None:
    data = os.urandom(1000)
    store.put("acme/wf_1/outputs/a b", data, "image/png")
    url = store.url("acme/wf_1/outputs/a b", expires_s=60)
    if isinstance(store, LocalArtifactStore):
        assert url is None
    else:
        assert url is not None and "X-Amz-Expires=60" in url
        response = httpx.get(url)  # no credentials: the URL carries its signature
        assert response.status_code == 200
        assert response.content == data and response.headers["content-type"] == "image/png"
    for expires_s in (0, 8 * 24 * 3600):
        with pytest.raises(ValueError):
            store.url("acme/wf_1/outputs/a b", expires_s=expires_s)


def test_large_object_round_trip(store: ArtifactStore) -> None:
    data = os.urandom(8 * 1024 * 1024)
    assert store.put("acme/uploads/big", data, "audio/wav").bytes == len(data)
    assert store.get("acme/uploads/big") == (data, "audio/wav")
    assert store.info("acme/uploads/big") == ArtifactInfo("acme/uploads/big", "audio/wav", len(data))


def test_pickled_store_works(store: ArtifactStore) -> None:
    store.ping()  # connected before pickling: the copy must open its own connection
    store.put("acme/wf_1/outputs/a", b"before", "text/plain")
    copy = pickle.loads(pickle.dumps(store))
    assert type(copy) is type(store)
    copy.ping()
    assert copy.get("acme/wf_1/outputs/a") == (b"before", "text/plain")
    copy.put("acme/wf_1/outputs/b", b"from the copy", "text/plain")
    assert store.get("acme/wf_1/outputs/b") == (b"from the copy", "text/plain")


def test_concurrent_writers_never_mix(store: ArtifactStore) -> None:
    versions = [bytes([n]) * 100_000 for n in range(8)]
    threads = [
        threading.Thread(target=store.put, args=("acme/wf_1/outputs/a", data, f"text/v{n}"))
        for n, data in enumerate(versions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    data, content_type = store.get("acme/wf_1/outputs/a")
    assert data in versions and content_type == f"text/v{versions.index(data)}"


def test_local_write_that_fails_keeps_the_old_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalArtifactStore(tmp_path)
    store.put("acme/wf_1/outputs/a", b"old", "text/plain")

    def crash(*args: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        store.put("acme/wf_1/outputs/a", b"new", "image/png")
    monkeypatch.undo()
    assert store.get("acme/wf_1/outputs/a") == (b"old", "text/plain")
    assert [p.name for p in (tmp_path / "acme/wf_1/outputs").iterdir()] == ["a@artifact"]  # no temporary file


def test_local_delete_prefix_sweeps_leftover_temporary_files(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.put("acme/wf_1/outputs/a", b"x", "text/plain")
    (tmp_path / "acme/wf_1/outputs/@leftover.tmp").write_bytes(b"half")
    assert store.delete_prefix("acme/wf_1") == 1
    assert not (tmp_path / "acme/wf_1").exists()


def test_s3_key_prefix(moto_endpoint: str, s3: Any, s3_bucket: str) -> None:  # noqa: F811
    store = S3ArtifactStore(s3_bucket, endpoint_url=moto_endpoint, prefix="labubu/artifacts/")
    store.put("acme/wf_1/outputs/a", b"x", "text/plain")
    store.put("acme/wf_1/outputs/b", b"y", "text/plain")
    listed = s3.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [item["Key"] for item in listed] == [
        "labubu/artifacts/acme/wf_1/outputs/a",
        "labubu/artifacts/acme/wf_1/outputs/b",
    ]
    assert store.info("acme/wf_1/outputs/a") == ArtifactInfo("acme/wf_1/outputs/a", "text/plain", 1)
    assert store.delete_prefix("acme") == 2
    assert s3.list_objects_v2(Bucket=s3_bucket).get("Contents") is None


def test_s3_creates_its_bucket_when_asked(moto_endpoint: str, s3: Any) -> None:  # noqa: F811
    bucket = f"test-{uuid.uuid4().hex}"
    with pytest.raises(ClientError):
        S3ArtifactStore(bucket, endpoint_url=moto_endpoint).ping()
    try:
        S3ArtifactStore(bucket, endpoint_url=moto_endpoint, create_bucket=True).ping()
        S3ArtifactStore(bucket, endpoint_url=moto_endpoint, create_bucket=True).ping()  # it exists: no error
    finally:
        s3.delete_bucket(Bucket=bucket)


def test_open_artifacts(tmp_path: Path) -> None:
    local = open_artifacts(None, None, tmp_path)
    assert isinstance(local, LocalArtifactStore) and local.root == tmp_path / "artifacts"
    s3 = open_artifacts("bucket", "http://127.0.0.1:9", tmp_path)  # lazy: nothing is contacted
    assert isinstance(s3, S3ArtifactStore) and (s3.bucket, s3.endpoint_url) == ("bucket", "http://127.0.0.1:9")

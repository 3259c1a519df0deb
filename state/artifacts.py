"""The artifact store: the bytes of node inputs, node outputs and uploads, each with its content type.

Two implementations behind one interface: a local directory (the single-machine default) and S3
(`LABUBU_S3_BUCKET`, any S3-compatible endpoint), which can also hand clients a presigned URL.

Keys are paths that the platform builds, such as `acme/wf_123/outputs/write`. They are checked all
the same, so that a key built from user input by mistake can never reach outside the store's root.
`delete_prefix` works on whole path segments: `acme/wf_1` never touches `acme/wf_10`.

Stores connect lazily and reconnect after a fork or unpickling, so a store object can be passed
to a Ray actor or task as an argument.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

# S3's limit on a key's length, applied to both stores so that they accept the same keys.
MAX_KEY_BYTES = 1024
MAX_CONTENT_TYPE_CHARS = 255
# SigV4 presigned URLs live a week at most.
MAX_URL_EXPIRES_S = 7 * 24 * 3600


@dataclass(frozen=True)
class ArtifactInfo:
    """An artifact's key, content type and length in bytes."""

    key: str
    content_type: str
    bytes: int


class ArtifactNotFound(LookupError):
    """No artifact under this key; the ingress answers 404."""

    code: ClassVar[str] = "not_found"
    status: ClassVar[int] = 404

    def __init__(self, key: str) -> None:
        super().__init__(f"no artifact {key!r}")
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised inside Ray actors and tasks: keep the key when pickled.
        return (type(self), (self.key,))


def check_key(key: str) -> str:
    """`key` itself if it is a relative path of plain segments; ValueError otherwise."""
    if not isinstance(key, str) or not key:
        raise ValueError("an artifact key must be a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"artifact key longer than {MAX_KEY_BYTES} bytes")
    # NUL and the other control characters: never in a real key, and S3 listings (XML) cannot carry them.
    if "\\" in key or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValueError(f"artifact key {key!r} has a backslash or a control character")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise ValueError(f"artifact key {key!r} is absolute or has an empty, '.' or '..' segment")
    return key


def check_content_type(content_type: str) -> str:
    # Stored as an HTTP header value (S3) or a line of text (local): printable ASCII only.
    if not content_type or len(content_type) > MAX_CONTENT_TYPE_CHARS:
        raise ValueError(f"a content type must have 1 to {MAX_CONTENT_TYPE_CHARS} characters")
    if not (content_type.isascii() and content_type.isprintable()):
        raise ValueError(f"content type {content_type!r} is not printable ASCII")
    return content_type


def _check_expires(expires_s: int) -> None:
    if not 1 <= expires_s <= MAX_URL_EXPIRES_S:
        raise ValueError(f"expires_s must be between 1 and {MAX_URL_EXPIRES_S}")


class ArtifactStore(ABC):
    """Bytes with a content type by key; every method is safe to call from several threads."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> ArtifactInfo:
        """Store `data` under `key`, replacing what was there; readers see the old or the new, never a part."""

    @abstractmethod
    def get(self, key: str) -> tuple[bytes, str]:
        """The bytes and content type under `key`; ArtifactNotFound if there are none."""

    @abstractmethod
    def info(self, key: str) -> ArtifactInfo | None: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the artifact if it exists."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete the artifact `prefix` and every artifact under `prefix/`; how many there were."""

    @abstractmethod
    def url(self, key: str, expires_s: int = 900) -> str | None:
        """A URL that downloads the artifact without credentials for `expires_s` seconds, where the store
        has such URLs (None otherwise). It does not check that the artifact exists."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store does not answer."""


# On disk, artifact `a/b/c` is the file `a/b/c@artifact`, and temporary files start with `@`. Key
# segments have `%` and `@` percent-escaped, so no directory, artifact or temporary file can share a
# name, even when a key is also the folder of others (`a/b` and `a/b/c`, which S3 allows too).
_FILE_SUFFIX = "@artifact"


def _escape_segment(segment: str) -> str:
    return segment.replace("%", "%25").replace("@", "%40")


class LocalArtifactStore(ArtifactStore):
    """Files under a root directory.

    The content type is the first line of the artifact's file, the bytes follow: one file written
    with one atomic rename, so the data and its type can never disagree after a crash.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def _folder(self, key: str) -> Path:
        return self.root.joinpath(*(_escape_segment(s) for s in key.split("/")))

    def _file(self, key: str) -> Path:
        folder = self._folder(check_key(key))
        return folder.with_name(folder.name + _FILE_SUFFIX)

    def put(self, key: str, data: bytes, content_type: str) -> ArtifactInfo:
        path = self._file(key)
        header = check_content_type(content_type).encode() + b"\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix="@", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(header)
                file.write(data)
                file.flush()
                # Without it, a power cut soon after the rename can leave an empty file under the name.
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return ArtifactInfo(key, content_type, len(data))

    def get(self, key: str) -> tuple[bytes, str]:
        try:
            with self._file(key).open("rb") as file:
                header = file.readline(MAX_CONTENT_TYPE_CHARS + 1)
                data = file.read()
        except FileNotFoundError:
            raise ArtifactNotFound(key) from None
        return data, header.rstrip(b"\n").decode()

    def info(self, key: str) -> ArtifactInfo | None:
        try:
            with self._file(key).open("rb") as file:
                header = file.readline(MAX_CONTENT_TYPE_CHARS + 1)
                size = os.fstat(file.fileno()).st_size
        except FileNotFoundError:
            return None
        return ArtifactInfo(key, header.rstrip(b"\n").decode(), size - len(header))

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        prefix = check_key(prefix)
        folder = self._folder(prefix)
        count = 0
        if folder.is_dir():
            count = sum(1 for _ in folder.rglob(f"*{_FILE_SUFFIX}"))
            # Also sweeps the temporary files that a crash left behind. Errors are ignored so that a
            # concurrent delete of the same folder is no failure; a folder that stays is one.
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                raise OSError(f"could not delete the artifacts under {prefix!r} in {self.root}")
        file = self._file(prefix)
        if file.exists():
            file.unlink(missing_ok=True)
            count += 1
        return count

    def url(self, key: str, expires_s: int = 900) -> str | None:
        check_key(key)
        _check_expires(expires_s)
        return None

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise OSError(f"artifact directory {self.root} is missing or not writable")


class S3ArtifactStore(ArtifactStore):
    """Objects in an S3 bucket, under an optional key prefix; the content type is the object's ContentType.

    Credentials come from boto3's usual chain (environment, shared files, instance roles), never from
    arguments. With `create_bucket`, a missing bucket is created at construction.
    """

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        prefix: str = "",
        create_bucket: bool = False,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.prefix = f"{check_key(prefix.rstrip('/'))}/" if prefix else ""
        if create_bucket:
            self._create_bucket()

    @property
    def client(self) -> Any:
        # Not an attribute: a pickled store carries no connection, and its copy uses its process's client.
        return _s3_client(self.endpoint_url, self.region)

    def _create_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if not _is_missing(exc):
                raise
        region = self.client.meta.region_name
        # us-east-1 (also boto3's default) is the one region that refuses its own name as a location constraint.
        options = (
            {"CreateBucketConfiguration": {"LocationConstraint": region}} if region and region != "us-east-1" else {}
        )
        try:
            self.client.create_bucket(Bucket=self.bucket, **options)
        except ClientError as exc:
            # Another process created it first.
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise

    def put(self, key: str, data: bytes, content_type: str) -> ArtifactInfo:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.prefix + check_key(key),
            Body=data,
            ContentType=check_content_type(content_type),
        )
        return ArtifactInfo(key, content_type, len(data))

    def get(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + check_key(key))
        except ClientError as exc:
            if _is_missing(exc):
                raise ArtifactNotFound(key) from None
            raise
        with contextlib.closing(response["Body"]) as body:
            return body.read(), response["ContentType"]

    def info(self, key: str) -> ArtifactInfo | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self.prefix + check_key(key))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return ArtifactInfo(key, response["ContentType"], int(response["ContentLength"]))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + check_key(key))

    def delete_prefix(self, prefix: str) -> int:
        prefix = check_key(prefix)
        count = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}{prefix}/"
        )
        for page in pages:
            # A page holds at most 1000 keys, as many as one delete_objects call takes.
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self._delete_objects(keys)
                count += len(keys)
        # Listing `prefix/` leaves out the artifact named `prefix` itself, and delete_objects reports
        # absent keys as deleted: look it up to count it right.
        if self.info(prefix) is not None:
            self.delete(prefix)
            count += 1
        return count

    def _delete_objects(self, keys: list[dict[str, str]]) -> None:
        response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise OSError(f"S3 could not delete {len(errors)} objects, e.g. {first.get('Key')!r}: {first.get('Code')}")

    def url(self, key: str, expires_s: int = 900) -> str | None:
        _check_expires(expires_s)
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.prefix + check_key(key)},
            ExpiresIn=expires_s,
        )
        return url

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


# One S3 client per process and endpoint, shared by every store and every unpickled copy: making one
# loads the S3 service model (a few hundred milliseconds), which a Ray task should not pay each time.
# Clients are thread-safe; making them is not (boto3 sessions are not), hence the lock.
_clients: dict[tuple[int, str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def _s3_client(endpoint_url: str | None, region: str | None) -> Any:
    key = (os.getpid(), endpoint_url, region)  # a forked child must not share its parent's connections
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            # S3-compatible stores (MinIO, Ceph, moto) rarely serve virtual-hosted bucket names.
            addressing = "path" if endpoint_url else "auto"
            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": addressing},
                retries={"mode": "standard", "max_attempts": 5},
            )
            session = boto3.session.Session()
            client = _clients[key] = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
    return client


def _is_missing(exc: Any) -> bool:
    # get_object says NoSuchKey; HEAD requests have no body, so head_object and head_bucket say 404.
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


def open_artifacts(s3_bucket: str | None, s3_endpoint_url: str | None, data_dir: str | Path) -> ArtifactStore:
    """S3 when a bucket is configured, else the `artifacts` directory in the data directory."""
    if s3_bucket:
        return S3ArtifactStore(s3_bucket, endpoint_url=s3_endpoint_url)
    return LocalArtifactStore(Path(data_dir).expanduser() / "artifacts")

"""Where latent blobs live: one small interface over a Django storage, local directory or S3 bucket.

The cache's rows (:mod:`webapp.cache.models`) name latents by *storage key*, a path relative to the
latents storage (``<model key hash>/<xx>/<uuid>-k<K>.safetensors``), never by a host path. Which storage
holds them is a setting (``STORAGES["latents"]``, chosen by ``T2I_STORAGE``; docs/storage.md):

* local (``make run``'s default, and right for a shared mount such as NFS/EFS): a
  :class:`~django.core.files.storage.FileSystemStorage` at ``settings.T2I_CACHE_DIR`` (read when asked, so
  a test or command that moves the directory is followed);
* S3-compatible (AWS S3, MinIO; django-storages' ``S3Storage``): workers on other hosts read what any worker
  wrote. Reads, writes, deletes and listings go straight to the bucket's client so that a read is one GET
  (the Storage API's ``open`` adds a HEAD), a write one PUT and a deletion of many keys one request.

Every other backend goes through the plain Storage API (open, save, delete, listdir, get_modified_time).

A per-process LRU (:class:`LatentLRU`, ``settings.T2I_LATENT_LRU_BYTES``) keeps the bytes of recently read
latents. It can never serve stale bytes: a key is written once (a fresh uuid each time) and never rewritten;
at worst it serves a latent whose row was evicted a moment ago, as a read that had just finished would.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages

log = logging.getLogger(__name__)

LATENTS = "latents"  # the STORAGES alias of the latent blobs (images use "default")
FILESYSTEM_BACKEND = "django.core.files.storage.FileSystemStorage"
S3_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


def is_s3(storage: Storage) -> bool:
    """Whether ``storage`` is django-storages' S3 backend (checked without importing boto3)."""
    module = sys.modules.get("storages.backends.s3")
    return module is not None and isinstance(storage, module.S3Storage)


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage raises when it cannot answer (disk error, endpoint down, access denied): the image view
    answers 503 and a resume falls back to K = 0 on these. A missing file is FileNotFoundError (an OSError)."""
    errors: list[type[BaseException]] = [OSError]
    exceptions = sys.modules.get("botocore.exceptions")
    if exceptions is not None:
        errors += [exceptions.BotoCoreError, exceptions.ClientError]
    return tuple(errors)


class LatentLRU:
    """The bytes of recently read latents, at most ``max_bytes`` in total (0: off). Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: tuple[str, str], data: bytes) -> None:
        if len(data) > self.max_bytes:
            return  # also covers max_bytes == 0
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes -= len(old) if old is not None else 0
            self._items[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


class LatentStore:
    """Read, write, delete and list latent blobs by storage key in one Django storage."""

    def __init__(self, storage: Storage, lru: LatentLRU | None = None) -> None:
        self.storage = storage
        self.lru = lru
        self.s3 = is_s3(storage)
        # Names the storage in LRU keys: two stores (a test's directories, two buckets) never share entries.
        if self.s3:
            self.ident = f"s3:{storage.endpoint_url or ''}/{storage.bucket_name}/{storage.location}"
        else:
            self.ident = f"{type(storage).__name__}:{getattr(storage, 'location', id(storage))}"

    # -- reading ---------------------------------------------------------------------------------------------

    def read(self, name: str) -> bytes | None:
        """The blob stored under ``name``, or None when there is none (evicted or never written)."""
        key = (self.ident, name)
        if self.lru is not None and (data := self.lru.get(key)) is not None:
            return data
        data = self._get_s3(name) if self.s3 else self._get(name)
        if data is not None and self.lru is not None:
            self.lru.put(key, data)
        return data

    def _get(self, name: str) -> bytes | None:
        try:
            with self.storage.open(name, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _get_s3(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            answer = self._client().get_object(Bucket=self.storage.bucket_name, Key=self._key(name))
        except ClientError as err:
            if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        with answer["Body"] as body:
            return body.read()

    # -- writing and deleting --------------------------------------------------------------------------------

    def write(self, name: str, data: bytes) -> int:
        """Store ``data`` under exactly ``name`` (a fresh key: never an existing one); returns its size."""
        if self.s3:
            self._client().put_object(
                Bucket=self.storage.bucket_name,
                Key=self._key(name),
                Body=data,
                ContentType="application/octet-stream",
            )
        else:
            stored = self.storage.save(name, ContentFile(data))
            if stored != name:  # a storage that renames on collision: the row must name what was written
                self.storage.delete(stored)
                raise RuntimeError(f"latent storage stored {name!r} as {stored!r}; keys must be kept as given")
        return len(data)

    def delete(self, names: Iterable[str]) -> None:
        """Remove these keys; a key already gone is not an error."""
        names = list(names)
        if self.s3:
            client = self._client()
            for at in range(0, len(names), S3_DELETE_BATCH):
                batch = names[at : at + S3_DELETE_BATCH]
                answer = client.delete_objects(
                    Bucket=self.storage.bucket_name,
                    Delete={"Objects": [{"Key": self._key(n)} for n in batch], "Quiet": True},
                )
                for error in answer.get("Errors", ()):
                    log.warning("latent %s not deleted: %s", error.get("Key"), error.get("Message"))
            return
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                self.storage.delete(name)

    # -- listing (the orphan sweep) --------------------------------------------------------------------------

    def listing(self) -> Iterator[tuple[str, float]]:
        """Every stored key with its last-modified time (Unix seconds), in no particular order."""
        if self.s3:
            yield from self._list_s3()
        else:
            yield from self._walk("")

    def _walk(self, path: str) -> Iterator[tuple[str, float]]:
        try:
            dirs, files = self.storage.listdir(path)
        except FileNotFoundError:  # a local directory not created yet (nothing stored)
            return
        for file in files:
            name = posixpath.join(path, file) if path else file
            try:
                yield name, self.storage.get_modified_time(name).timestamp()
            except FileNotFoundError:  # removed while we listed
                continue
        for sub in dirs:
            yield from self._walk(posixpath.join(path, sub) if path else sub)

    def _list_s3(self) -> Iterator[tuple[str, float]]:
        prefix = self._key("")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=self.storage.bucket_name, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                yield item["Key"][len(prefix) :], item["LastModified"].timestamp()

    # -- S3 plumbing -------------------------------------------------------------------------------------------

    def _client(self) -> Any:
        return self.storage.connection.meta.client  # django-storages' per-thread boto3 client

    def _key(self, name: str) -> str:
        from storages.utils import clean_name

        # django-storages' own name → key mapping (its location prefix, refusing names that escape it).
        return self.storage._normalize_name(clean_name(name))


@lru_cache(maxsize=1)
def shared_lru() -> LatentLRU:
    """This process's LRU of recently read latents (one per worker process)."""
    return LatentLRU(settings.T2I_LATENT_LRU_BYTES)


@lru_cache(maxsize=16)
def _local_storage(location: str) -> FileSystemStorage:
    # allow_overwrite: keys are kept exactly as given (as S3 does), never renamed on a collision.
    return FileSystemStorage(location=location, allow_overwrite=True)


def latent_storage() -> Storage:
    """The configured latents storage. The local backend sits at ``settings.T2I_CACHE_DIR`` as it is now."""
    config = settings.STORAGES.get(LATENTS, {"BACKEND": FILESYSTEM_BACKEND})
    if config["BACKEND"] == FILESYSTEM_BACKEND:
        return _local_storage(str(settings.T2I_CACHE_DIR))
    return storages[LATENTS]


def latent_store() -> LatentStore:
    """The interface the cache store uses: the configured storage with this process's LRU."""
    return LatentStore(latent_storage(), shared_lru())

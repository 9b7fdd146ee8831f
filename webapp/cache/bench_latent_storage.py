"""Latent storage benchmark: what object storage adds to a resume, against the local file.

    python -m webapp.cache.bench_latent_storage [--reads 400] [--shape 1,4,64,64 1,4,128,128]
        [--endpoint-url URL --bucket NAME [--prefix P]]

A resume (:func:`webapp.cache.store.start_latent`) is one ledger query, then one latent read: the storage key
fetched and decoded from safetensors. Only the read depends on the backend, so this times exactly that
(``safetensors.torch.load(LatentStore.read(key))``) for latents of each ``--shape`` (float32; 1×4×64×64 is
SD 1.5 at 512², 64 KiB; 1×4×128×128 is SDXL at 1024², 256 KiB), with the per-process LRU off, from:

* ``local``: a FileSystemStorage directory (the page cache makes this the floor: a warm local file);
* ``s3``: moto's S3 server on loopback, started here (or the S3-compatible endpoint you name, e.g. MinIO);
* ``lru``: the same S3 keys read again with the worker's LRU on (a latent this worker used recently).

Each round reads one fresh key from every backend in turn, so load drift on the machine hits all alike.
Prints p50 and p99 per backend and the added p50/p99 of S3 over the local file (target: p99 ≤ 20 ms on
loopback; issue 17).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from webapp.cache.latent_storage import LatentLRU, LatentStore, latent_storage
from webapp.cache.loopback_s3 import LoopbackS3


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def time_reads(stores: dict[str, LatentStore], keys: list[str], rounds: int) -> dict[str, list[float]]:
    """Milliseconds per read-and-decode, per store, interleaved round by round."""
    from safetensors.torch import load

    times: dict[str, list[float]] = {name: [] for name in stores}
    for i in range(rounds):
        key = keys[i % len(keys)]
        for name, store in stores.items():
            started = time.perf_counter()
            tensor = load(store.read(key))["latent"]
            times[name].append((time.perf_counter() - started) * 1000)
            assert tensor.numel() > 0
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=400, help="timed reads per backend and shape")
    parser.add_argument("--warmup", type=int, default=20, help="untimed reads first (connections, imports)")
    parser.add_argument("--shape", nargs="+", default=["1,4,64,64", "1,4,128,128"], help="latent shapes")
    parser.add_argument("--endpoint-url", help="an S3-compatible endpoint instead of moto on loopback")
    parser.add_argument("--bucket", default="t2i-bench", help="bucket (created on the loopback server)")
    parser.add_argument("--prefix", default=f"bench-{uuid.uuid4().hex[:8]}", help="key prefix in the bucket")
    args = parser.parse_args(argv)

    import torch
    from safetensors.torch import save

    server = None
    if args.endpoint_url:
        env = {
            "T2I_STORAGE": "s3",
            "T2I_S3_BUCKET": args.bucket,
            "T2I_S3_ENDPOINT_URL": args.endpoint_url,
            "T2I_S3_PREFIX": args.prefix,
        }
    else:
        server = LoopbackS3(args.bucket).start()
        env = server.storage_env(args.prefix)
    run_dir = Path(tempfile.mkdtemp(prefix="t2i-bench-storage-"))
    os.environ.update(env, T2I_DATA_DIR=str(run_dir / "data"), DJANGO_SETTINGS_MODULE="webapp.settings")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # nothing is signed: a throwaway
    try:
        import django

        django.setup()
        from django.core.files.storage import FileSystemStorage

        s3 = latent_storage()  # STORAGES["latents"] as the settings build it for T2I_STORAGE=s3
        local = FileSystemStorage(location=str(run_dir / "latent-cache"), allow_overwrite=True)
        stores = {
            "local": LatentStore(local),
            "s3": LatentStore(s3),
            "lru": LatentStore(s3, LatentLRU(256 * 1024**2)),
        }
        print(f"S3 endpoint: {s3.endpoint_url or 'AWS'} (bucket {s3.bucket_name}, prefix {s3.location}/)")
        print(f"reads per backend and shape: {args.reads} (after {args.warmup} untimed); LRU off for local, s3")
        print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}; {} CPUs".format(*os.getloadavg(), os.cpu_count()))
        rows = []
        for text in args.shape:
            shape = tuple(int(x) for x in text.split(","))
            keys = []
            for i in range(min(args.reads + args.warmup, 64)):  # distinct keys, reused round-robin
                data = save({"latent": torch.randn(shape, generator=torch.Generator().manual_seed(i))})
                key = f"bench/{uuid.uuid4().hex}-k25.safetensors"
                for name in ("local", "s3"):
                    stores[name].write(key, data)
                keys.append(key)
            for key in keys:  # the LRU store holds every key: its reads are all hits
                stores["lru"].read(key)
            time_reads(stores, keys, args.warmup)
            times = time_reads(stores, keys, args.reads)
            size_kib = len(data) / 1024
            for name, values in times.items():
                rows.append((text, size_kib, name, statistics.median(values), percentile(values, 99)))
            added50 = statistics.median(times["s3"]) - statistics.median(times["local"])
            added99 = percentile(times["s3"], 99) - percentile(times["local"], 99)
            rows.append((text, size_kib, "s3 - local", added50, added99))
            for name in ("local", "s3"):
                stores[name].delete(keys)
        print(f"{'shape':<14} {'KiB':>6}  {'backend':<11} {'p50 ms':>8} {'p99 ms':>8}")
        for shape, kib, name, p50, p99 in rows:
            print(f"{shape:<14} {kib:>6.0f}  {name:<11} {p50:>8.2f} {p99:>8.2f}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()

"""Where a run's files live: run ids as folder names, the data root's scheme and base, S3 clients.

``safe_run_id`` turns an Airflow run id into a folder name (and ``unsafe_run_id`` back);
``split_data_root`` reads a local folder or ``s3://bucket/prefix``; the S3 filesystem and
boto3 clients take their endpoint, region and credentials from the same environment
variables (``FORESIGHT_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL[_S3]``, ``AWS_REGION``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), so MinIO and moto work unchanged.
"""
from __future__ import annotations

import os
import re
import uuid
from typing import Any

import pyarrow.fs as pafs

from foresight_lib.errors import DataError

_SAFE_CHARS = re.compile(r"[A-Za-z0-9_.\-]")
_MAX_NAME = 180


def safe_run_id(run_id: str) -> str:
    """A folder name for an Airflow run id, reversible with :func:`unsafe_run_id`.

    Letters, digits, ``_``, ``-`` and ``.`` are kept; every other byte of the UTF-8 text
    becomes ``~XX`` (hex), e.g. ``scheduled__2024-03-01T02:00:00+00:00`` ->
    ``scheduled__2024-03-01T02~3A00~3A00~2B00~3A00``. A leading dot is escaped too, so
    the name is never ``.`` or ``..`` or hidden. Names longer than 180 characters are cut
    and end with a hash of the full id (then no longer reversible, still unique).
    """
    if not run_id or not run_id.strip():
        raise DataError("empty run id; pass the Airflow run id (e.g. scheduled__2024-03-01T02:00:00+00:00)")
    out = []
    for i, char in enumerate(run_id):
        if _SAFE_CHARS.match(char) and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"~{byte:02X}" for byte in char.encode("utf-8"))
    safe = "".join(out)
    if len(safe) > _MAX_NAME:
        digest = uuid.uuid5(uuid.NAMESPACE_URL, run_id).hex[:12]
        safe = f"{safe[:_MAX_NAME - 13]}-{digest}"
    return safe


def unsafe_run_id(safe: str) -> str:
    """The run id a :func:`safe_run_id` name came from."""
    raw = bytearray()
    i = 0
    while i < len(safe):
        if safe[i] == "~" and re.fullmatch(r"[0-9A-F]{2}", safe[i + 1:i + 3]):
            raw.append(int(safe[i + 1:i + 3], 16))
            i += 3
        else:
            raw.extend(safe[i].encode("utf-8"))
            i += 1
    return raw.decode("utf-8")


def _s3_endpoint() -> str | None:
    return (os.environ.get("FORESIGHT_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL"))


def _s3_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def s3_client_kwargs() -> dict[str, Any]:
    """boto3 client arguments from the same environment as the data root's S3 filesystem."""
    endpoint = _s3_endpoint()
    kwargs: dict[str, Any] = {"region_name": _s3_region()}
    if endpoint:
        kwargs["endpoint_url"] = endpoint if "://" in endpoint else f"http://{endpoint}"
    return kwargs


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 client configured from the environment (MinIO via FORESIGHT_S3_ENDPOINT/AWS_ENDPOINT_URL)."""
    endpoint = _s3_endpoint()
    kwargs: dict[str, Any] = {"region": _s3_region()}
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        if sep:
            kwargs["scheme"] = scheme
            kwargs["endpoint_override"] = host.rstrip("/")
        else:
            kwargs["endpoint_override"] = endpoint.rstrip("/")
        kwargs["force_virtual_addressing"] = False
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs)


def split_data_root(data_root: str) -> tuple[str, str]:
    """``(scheme, base path)``: ``("s3", "bucket/prefix")`` or ``("file", "/abs/folder")``."""
    text = str(data_root).strip()
    if text.startswith("s3://"):
        base = text[len("s3://"):].strip("/")
        if not base or base.startswith("/"):
            raise DataError(f"data root '{data_root}' names no bucket; write s3://bucket or s3://bucket/prefix")
        return "s3", base
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", text) and not text.startswith("file://"):
        raise DataError(f"data root '{data_root}' is not supported; use a local folder or s3://bucket/prefix")
    if text.startswith("file://"):
        text = text[len("file://"):]
    if not text:
        raise DataError("empty data root; set data_root in the config or FORESIGHT_DATA_ROOT")
    return "file", os.path.abspath(os.path.expanduser(text))

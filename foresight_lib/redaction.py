"""Keep secrets out of what Foresight stores and logs.

Credentials reach Foresight inside settings (``http://user:password@prometheus:9090``, a
``postgresql://user:password@db/mlflow`` tracking URI, ``?token=...`` in a URL, a
``password`` or ``token`` field) and inside the text of errors that quote them. They
must still be *used* (basic auth, bearer tokens), but never written to a run folder,
MLflow or a log line. These functions return copies with every secret replaced by
``***``; what is left (scheme, user, host, path, harmless settings) still tells a reader
where a request went.

A key "looks secret" when its last word (``db_password``, ``apiKey``, ``auth_token``)
is one of ``SECRET_WORDS``: so ``token_file``, ``key_file``, ``conn_id`` and metric
names such as ``api_token_requests_total`` keep their values.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "token", "key", "apikey", "credential",
    "credentials", "authorization", "auth", "bearer", "signature", "sig", "cookie",
})
"""Last words of key names whose values are secrets."""

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
_URL = re.compile(_SCHEME + r"[^\s'\"<>`]+")
# user:password@ after the scheme; the password runs to the token's last "@"
_USERINFO = re.compile(r"^(" + _SCHEME + r")([^\s:/?#@]*):(.*)@(?=[^@]*$)", re.DOTALL)
_PORT_THEN_PATH = re.compile(r"^\d*[/?#]")
"""``host:9090/users/@me``: a port and a path with an "@" in it, not a password."""
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#\s]+)=([^&;#\s'\"<>]*)")
_ASSIGNMENT = re.compile(
    r"(?<![\w.\-])([\"']?)([A-Za-z_][\w.\-]*)\1(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s&;,'\"<>)\]}]+)")
_AUTH_HEADER = re.compile(r"\b(Bearer|Basic|Token)(\s+)([A-Za-z0-9\-._~+/]{8,}=*)", re.IGNORECASE)
_MORE_WORDS = re.compile(r"[ \t]+[A-Za-z]")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def is_secret_key(name: Any) -> bool:
    """Does the key ``name`` hold a secret? Its last word decides (``client_secret`` yes, ``secret_name`` no)."""
    words = [w.lower() for w in _WORD_SPLIT.split(str(name)) if w]
    if not words:
        return False
    # "X-Amz-Signature", "apiKey" and "api_key" end in a secret word; "max_tokens" or "keys" do not
    return words[-1] in SECRET_WORDS


def redact_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``.

    ``http://ops:pw@host:9090/p?token=t&step=5m`` -> ``http://ops:***@host:9090/p?token=***&step=5m``.
    A user without a password is kept (it names who connects, not how). Text that is not a
    URL is returned unchanged.
    """
    if not isinstance(url, str) or "://" not in url:
        return url
    match = _USERINFO.match(url)
    if match and not _PORT_THEN_PATH.match(match.group(3)):
        url = f"{match.group(1)}{match.group(2)}:{MASK}@{url[match.end():]}"
    return _QUERY_PARAM.sub(_mask_param, url)


def _mask_param(match: re.Match) -> str:
    if is_secret_key(match.group(2)) and match.group(3):
        return f"{match.group(1)}{match.group(2)}={MASK}"
    return match.group(0)


def _mask_assignment(match: re.Match) -> str:
    quote, key, sep, value = match.groups()
    if not is_secret_key(key) or _starts_message(match):
        return match.group(0)
    masked = f"{value[0]}{MASK}{value[0]}" if value[0] in "\"'" else MASK
    return f"{quote}{key}{quote}{sep}{masked}"


def _starts_message(match: re.Match) -> bool:
    """``bearer_token: unknown setting``: a word and more words after a colon say something about the key."""
    sep, value = match.group(3), match.group(4)
    return ":" in sep and value.isalpha() and _MORE_WORDS.match(match.string, match.end()) is not None


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with the secrets it quotes replaced by ``***``.

    Every URL in it goes through :func:`redact_url`; ``password=...``-style assignments
    of secret keys (a libpq DSN, a query string outside a URL) and ``Bearer``/``Basic``
    credentials are masked too. A word followed by more words after a colon is a message
    about the key, not its value: ``bearer_token: unknown setting`` stays as it is.
    """
    if not isinstance(text, str) or not text:
        return text
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _ASSIGNMENT.sub(_mask_assignment, text)


def redact_config(obj: Any, _secret: bool = False) -> Any:
    """A copy of nested settings (dicts, lists) safe to store: secrets replaced by ``***``.

    Every string goes through :func:`redact_text` (URLs with credentials, ``token=...``);
    every value under a key that looks secret (``password``, ``token``, ``secret``,
    ``key``, ``credentials``, ``authorization``, ``bearer``...) is masked whole, down to
    the leaves of a nested one. Empty values (None, ``""``) are kept: they say "not set".
    """
    if isinstance(obj, Mapping):
        return {key: redact_config(value, _secret or is_secret_key(key)) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact_config(value, _secret) for value in obj)
    if obj is None or obj == "" or isinstance(obj, bool):
        return obj
    if _secret:
        return MASK
    if isinstance(obj, str):
        return redact_text(obj)
    return obj

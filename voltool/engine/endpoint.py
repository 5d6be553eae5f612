"""Which engine to talk to, found the way the `docker` CLI finds it.

Order: an explicit host (--host / VOLTOOL_HOST / config), an explicit context
(--context / VOLTOOL_CONTEXT / config), DOCKER_HOST (with DOCKER_TLS_VERIFY and
DOCKER_CERT_PATH), DOCKER_CONTEXT, the `currentContext` of the Docker CLI's
config.json, and last the default local socket.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voltool.errors import NotFound, UsageError
from voltool.words import quoted

DEFAULT_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Endpoint:
    host: str
    source: str  # human words: where this endpoint was found
    tls: Any = None  # docker.tls.TLSConfig or None


def resolve(
    host: str | None, context: str | None, environ: dict[str, str] | None = None
) -> Endpoint:
    """The engine to talk to, and where that came from; UsageError if its address is malformed."""
    return _checked(_find(host, context, environ))


def _find(host: str | None, context: str | None, environ: dict[str, str] | None) -> Endpoint:
    env = os.environ if environ is None else environ
    if host and context:
        raise UsageError("give either a host or a context, not both")
    if host:
        return Endpoint(host, "--host / VOLTOOL_HOST")
    if context:
        return _from_context(context, "--context / VOLTOOL_CONTEXT")
    if env.get("DOCKER_HOST"):
        return _from_docker_env(env)
    if env.get("DOCKER_CONTEXT"):
        return _from_context(env["DOCKER_CONTEXT"], "DOCKER_CONTEXT")
    from docker.context.config import get_current_context_name

    current = get_current_context_name()
    if current and current != "default":
        return _from_context(current, "current Docker context")
    return Endpoint(DEFAULT_HOST, "default socket")


def _checked(endpoint: Endpoint) -> Endpoint:
    """`endpoint`, if its address is one the SDK can parse; else UsageError.

    A malformed address is the user's mistake, not an unreachable engine: it is
    reported as such (exit 2) before any connection is tried.
    """
    from docker.utils import parse_host

    try:
        parse_host(endpoint.host, False, tls=bool(endpoint.tls))
    except Exception as e:  # docker-py raises DockerException or a bare ValueError
        raise UsageError(
            f"invalid engine address {quoted(endpoint.host)} (from {endpoint.source}): {e}; "
            "use unix:///path, tcp://host:port or ssh://user@host"
        ) from None
    return endpoint


def _from_docker_env(env: Mapping[str, str]) -> Endpoint:
    from docker.utils import kwargs_from_env

    try:
        kwargs = kwargs_from_env(environment=dict(env))
    except Exception as e:  # docker-py raises bare TLS/param errors here
        raise UsageError(f"DOCKER_HOST settings are not usable: {e}") from None
    return Endpoint(kwargs["base_url"], "DOCKER_HOST", kwargs.get("tls"))


def _from_context(name: str, source: str) -> Endpoint:
    from docker.context import ContextAPI

    if name == "default":
        return Endpoint(DEFAULT_HOST, f"context 'default' ({source})")
    try:
        ctx = ContextAPI.get_context(name)
    except Exception as e:
        raise UsageError(f"Docker context {quoted(name)} cannot be read: {e}") from None
    if ctx is None or not ctx.Host:
        raise NotFound(f"no Docker context named {quoted(name)}")
    return Endpoint(ctx.Host, f"context {quoted(name)} ({source})", ctx.TLSConfig or None)

"""triton:// targets (stage: validate, benchmark): where a served model lives.

    triton://HOST:PORT/MODEL[/VERSION]        HTTP/REST (Triton's default port 8000)
    triton+grpc://HOST:PORT/MODEL[/VERSION]   gRPC (default port 8001)
    triton+http://...                          HTTP, spelled out

A target names the protocol in its scheme so that `validate --target` and `benchmark` take
one string, like a file path, and a report records exactly what was asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ..errors import UserError

SCHEMES = {"triton": "http", "triton+http": "http", "triton+grpc": "grpc"}
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_FORMAT = "triton://HOST:PORT/MODEL[/VERSION] (or triton+grpc://...)"


@dataclass(frozen=True)
class TritonEndpoint:
    protocol: str  # "http" | "grpc"
    host: str
    port: int
    model: str
    version: str = ""  # "" = the server's latest ready version

    @property
    def address(self) -> str:
        """host:port as tritonclient takes it (IPv6 literals in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        scheme = "triton" if self.protocol == "http" else "triton+grpc"
        return f"{scheme}://{self.address}/{self.model}" + (f"/{self.version}" if self.version else "")

    def __str__(self) -> str:
        return self.url


def is_endpoint(target) -> bool:
    return isinstance(target, (str, TritonEndpoint)) and (
        isinstance(target, TritonEndpoint) or str(target).split("://", 1)[0] in SCHEMES and "://" in str(target))


def parse_endpoint(target: str | TritonEndpoint) -> TritonEndpoint:
    """'triton://127.0.0.1:8000/googlenet-digits/1' -> TritonEndpoint; UserError on anything else."""
    if isinstance(target, TritonEndpoint):
        return target
    text = str(target)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in SCHEMES:
        raise UserError(f"{text}: not a Triton endpoint; write {_FORMAT}")
    protocol = SCHEMES[scheme]
    authority, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not authority or not parts or len(parts) > 2:
        raise UserError(f"{text}: give the server and the model name: {_FORMAT}")
    host, port = _host_port(authority, protocol, text)
    model, version = parts[0], parts[1] if len(parts) == 2 else ""
    if not _MODEL_NAME.match(model):
        raise UserError(f"{text}: '{model}' is not a Triton model name (letters, digits, '_', '-', '.')")
    if version and not version.isdigit():
        raise UserError(f"{text}: model version '{version}' must be a positive integer (or leave it out for the "
                        "latest)")
    return TritonEndpoint(protocol, host, port, model, version)


def _host_port(authority: str, protocol: str, text: str) -> tuple[str, int]:
    port_text: Optional[str]
    if authority.startswith("["):  # [::1]:8000
        host, _, tail = authority[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else None
    else:
        host, _, port_text = authority.partition(":")
        port_text = port_text or None
    if not host:
        raise UserError(f"{text}: no host; {_FORMAT}")
    if port_text is None:
        return host, DEFAULT_PORTS[protocol]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UserError(f"{text}: port '{port_text}' must be a number from 1 to 65535")
    return host, int(port_text)

"""What AWS does with a SigV4-signed request: recompute the signature from the request as received.

The canonical request is rebuilt from the wire (method, path, the headers the request says it
signed, the body as sent) and signed again with botocore and the fake credentials the endpoint
knows; a request whose signature, key, scope or session token differs is refused.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials


@dataclass
class SigV4Verifier:
    """An `authorize` hook for `FakeOtlpReceiver`: it knows these keys (access key -> secret, token)."""

    keys: dict[str, tuple[str, str | None]]
    region: str = "us-east-1"
    service: str = "xray"
    accepted_keys: list[str] = field(default_factory=list)

    def __call__(self, path: str, headers: dict[str, str], body: bytes) -> str | None:
        authorization = headers.get("authorization", "")
        algorithm, _, fields = authorization.partition(" ")
        if algorithm != "AWS4-HMAC-SHA256":
            return "Missing Authentication Token"
        parts = dict(item.strip().split("=", 1) for item in fields.split(",") if "=" in item)
        access_key, _, scope = parts.get("Credential", "").partition("/")
        if access_key not in self.keys:
            return "The security token included in the request is invalid."
        secret, token = self.keys[access_key]
        date, region, service, terminal = [*scope.split("/"), "", "", "", ""][:4]
        timestamp = headers.get("x-amz-date", "")
        if (region, service, terminal) != (self.region, self.service, "aws4_request") or not timestamp.startswith(date):
            return f"Credential should be scoped to a valid region and service: {scope}"
        if token is not None and headers.get("x-amz-security-token") != token:
            return "The security token included in the request is invalid."
        signed_names = parts.get("SignedHeaders", "").split(";")
        if "host" not in signed_names or "x-amz-date" not in signed_names:
            return "Signed headers must include host and x-amz-date"
        request = AWSRequest(
            method="POST",
            url=f"http://{headers['host']}{path}",
            data=body,
            headers={name: headers[name] for name in signed_names if name in headers},
        )
        request.context["timestamp"] = timestamp
        signer = SigV4Auth(ReadOnlyCredentials(access_key, secret, token), self.service, self.region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, parts.get("Signature", "")):
            return "The request signature we calculated does not match the signature you provided."
        self.accepted_keys.append(access_key)
        return None

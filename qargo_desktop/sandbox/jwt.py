"""RS256 JSON Web Tokens and JSON Web Key Sets for the sandbox identity platform.

Only what the sandbox needs: sign claims with an RSA key, publish the public key as a JWKS, and
verify a token against that key set with the checks a resource server makes (signature,
algorithm, issuer, audience, expiry, not-before).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ALGORITHM = "RS256"
#: Clock skew tolerated on ``exp`` and ``nbf`` (Entra's resource servers allow about 5 min).
DEFAULT_LEEWAY_S = 0.0


class TokenError(Exception):
    """A token failed verification.

    Attributes:
        code: A short machine-readable reason: ``malformed``, ``invalid_signature``,
            ``unknown_key``, ``wrong_algorithm``, ``wrong_issuer``, ``wrong_audience``,
            ``not_yet_valid`` or ``token_expired``.
    """

    code = "invalid_token"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class TokenExpiredError(TokenError):
    """The token's ``exp`` has passed."""

    code = "token_expired"


class WrongAudienceError(TokenError):
    """The token was issued for another resource."""

    code = "wrong_audience"


class InvalidSignatureError(TokenError):
    """The signature does not verify with any published key (or the key id is unknown)."""

    code = "invalid_signature"


def b64url_encode(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; raises ValueError when malformed."""
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as error:
        raise ValueError("not base64url") from error


def _int_to_b64(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _b64_to_int(text: str) -> int:
    return int.from_bytes(b64url_decode(text), "big")


class SigningKey:
    """An RSA key that signs tokens, with a key id derived from its public part.

    Attributes:
        kid: The key id (RFC 7638 thumbprint, base64url), put in every token's header.
    """

    def __init__(self, private_key: rsa.RSAPrivateKey | None = None) -> None:
        self._private = private_key or rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
        self.public_key = self._private.public_key()
        self.kid = jwk_thumbprint(public_jwk(self.public_key))

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK with ``kid``, ``use`` and ``alg``."""
        return {"kid": self.kid, "use": "sig", "alg": ALGORITHM, **public_jwk(self.public_key)}

    def sign(self, claims: Mapping[str, Any], *, token_type: str = "JWT") -> str:
        """A compact RS256 JWS of ``claims``."""
        header = {"typ": token_type, "alg": ALGORITHM, "kid": self.kid}
        signing_input = (
            b64url_encode(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url_encode(json.dumps(dict(claims), separators=(",", ":")).encode())
        )
        signature = self._private.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return signing_input + "." + b64url_encode(signature)


def public_jwk(key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The RSA public key's JWK members (``kty``, ``n``, ``e``)."""
    numbers = key.public_numbers()
    return {"kty": "RSA", "n": _int_to_b64(numbers.n), "e": _int_to_b64(numbers.e)}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint of an RSA JWK."""
    canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def jwks(keys: Iterable[SigningKey]) -> dict[str, Any]:
    """A JWKS document listing ``keys``."""
    return {"keys": [key.jwk() for key in keys]}


def key_from_jwk(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    """The RSA public key a JWK describes."""
    if jwk.get("kty") != "RSA":
        raise ValueError("only RSA keys are supported")
    return rsa.RSAPublicNumbers(_b64_to_int(str(jwk["e"])), _b64_to_int(str(jwk["n"]))).public_key()


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of ``token`` without any check; raises TokenError if malformed."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("The token is not a compact JWS.", "malformed")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except ValueError as error:
        raise TokenError("The token is not valid base64url JSON.", "malformed") from error
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("The token's header or payload is not a JSON object.", "malformed")
    return header, claims


def verify(
    token: str,
    key_set: Mapping[str, Any],
    *,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
    leeway_s: float = DEFAULT_LEEWAY_S,
) -> dict[str, Any]:
    """Verify ``token`` against a JWKS and return its claims.

    Args:
        token: The compact JWS.
        key_set: A JWKS document (``{"keys": [...]}``).
        audience: Required ``aud`` (None: not checked).
        issuer: Required ``iss`` (None: not checked).
        now: Current time in epoch seconds (None: the system clock).
        leeway_s: Tolerated clock skew on ``exp`` and ``nbf``.

    Returns:
        The claims.

    Raises:
        TokenError: The token is malformed, badly signed, for another audience or issuer, not
            yet valid, or expired (TokenExpiredError, WrongAudienceError, InvalidSignatureError
            for the common cases).
    """
    header, claims = decode_unverified(token)
    if header.get("alg") != ALGORITHM:
        raise TokenError(f"The token's algorithm {header.get('alg')!r} is not RS256.",
                         "wrong_algorithm")  # fmt: skip
    kid = header.get("kid")
    jwk = next((k for k in key_set.get("keys", []) if k.get("kid") == kid), None)
    if jwk is None:
        raise InvalidSignatureError("The token was signed with an unknown key.", "unknown_key")

    signing_input, _, signature = token.rpartition(".")
    try:
        key_from_jwk(jwk).verify(
            b64url_decode(signature),
            signing_input.encode("ascii"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, ValueError) as error:
        raise InvalidSignatureError("The token's signature is not valid.") from error

    if issuer is not None and claims.get("iss") != issuer:
        raise TokenError(f"The token was issued by {claims.get('iss')!r}, not {issuer!r}.",
                         "wrong_issuer")  # fmt: skip
    if audience is not None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if audience not in audiences:
            raise WrongAudienceError(f"The token is for {aud!r}, not {audience!r}.")

    current = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise TokenError("The token has no expiry.", "malformed")
    if current > exp + leeway_s:
        raise TokenExpiredError("The token has expired.")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and current + leeway_s < nbf:
        raise TokenError("The token is not valid yet.", "not_yet_valid")
    return claims

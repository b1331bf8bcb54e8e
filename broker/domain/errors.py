"""The error catalogue: every error a client can see, with a stable code and HTTP status."""

from __future__ import annotations

from typing import Any, ClassVar


class BrokerError(Exception):
    """Something went wrong."""

    code: ClassVar[str] = "ERR_INTERNAL"
    status: ClassVar[int] = 500

    def __init__(
        self, message: str | None = None, details: Any = None, retry_after: int | None = None
    ) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.details = details
        self.retry_after = retry_after  # seconds, sent as Retry-After
        super().__init__(self.message)

    def to_body(self) -> dict[str, Any]:
        """The JSON body every error response carries."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def headers(self) -> dict[str, str] | None:
        """HTTP headers the error response carries besides its body."""
        if self.retry_after is None:
            return None
        return {"Retry-After": str(self.retry_after)}


class MalformedRequest(BrokerError):
    """The request body is not valid JSON."""

    code = "ERR_MALFORMED_REQUEST"
    status = 400


class InvalidRequest(BrokerError):
    """The request is invalid; see details."""

    code = "ERR_VALIDATION"
    status = 422


class InvalidCursor(BrokerError):
    """The pagination cursor is not one this API returned."""

    code = "ERR_INVALID_CURSOR"
    status = 400


class UploadTooLarge(BrokerError):
    """The file is larger than allowed."""

    code = "ERR_UPLOAD_TOO_LARGE"
    status = 413


class ContentTypeNotAllowed(BrokerError):
    """This content type may not be uploaded."""

    code = "ERR_CONTENT_TYPE_NOT_ALLOWED"
    status = 415


class UploadTooSmall(BrokerError):
    """The file is smaller than the policy allows."""

    code = "ERR_UPLOAD_TOO_SMALL"
    status = 422


class UnknownPolicy(BrokerError):
    """No upload policy has this name."""

    code = "ERR_UNKNOWN_POLICY"
    status = 422


class MultipartNotAllowed(BrokerError):
    """The policy does not allow multipart uploads."""

    code = "ERR_MULTIPART_NOT_ALLOWED"
    status = 422


class QuotaExceeded(BrokerError):
    """The owner's upload quota would be exceeded; delete files or wait for pending ones."""

    code = "ERR_QUOTA_EXCEEDED"
    status = 403


class RateLimited(BrokerError):
    """Too many requests; try again after Retry-After seconds."""

    code = "ERR_RATE_LIMITED"
    status = 429

    def __init__(self, retry_after: int, message: str | None = None, details: Any = None) -> None:
        details = {"retry_after": retry_after, **(details or {})}
        super().__init__(message, details, retry_after=retry_after)


class IdempotencyKeyReused(BrokerError):
    """This Idempotency-Key was already used with a different request."""

    code = "ERR_IDEMPOTENCY_KEY_REUSED"
    status = 409


class NotMultipart(BrokerError):
    """The upload is not a multipart upload."""

    code = "ERR_NOT_MULTIPART"
    status = 409


class UploadNotPending(BrokerError):
    """The upload is no longer pending."""

    code = "ERR_UPLOAD_NOT_PENDING"
    status = 409


class InvalidParts(BrokerError):
    """The part list does not match the parts storage holds; the upload stays resumable."""

    code = "ERR_INVALID_PARTS"
    status = 400


class Unauthorized(BrokerError):
    """A valid bearer token is required."""

    code = "ERR_UNAUTHORIZED"
    status = 401


class TokenInvalid(Unauthorized):
    """The token is malformed, or lacks a claim this broker needs."""

    code = "ERR_TOKEN_INVALID"


class TokenExpired(Unauthorized):
    """The token has expired."""

    code = "ERR_TOKEN_EXPIRED"


class TokenSignature(Unauthorized):
    """The token's signature does not verify."""

    code = "ERR_TOKEN_SIGNATURE"


class TokenAudience(Unauthorized):
    """The token is not meant for this broker (its aud)."""

    code = "ERR_TOKEN_AUDIENCE"


class TokenIssuer(Unauthorized):
    """The token's issuer (its iss) is not one this broker trusts."""

    code = "ERR_TOKEN_ISSUER"


class TokenAlgorithm(Unauthorized):
    """The token is signed with an algorithm its issuer may not use."""

    code = "ERR_TOKEN_ALGORITHM"


class TokenKeyUnknown(Unauthorized):
    """The token is signed by a key its issuer does not publish."""

    code = "ERR_TOKEN_KEY_UNKNOWN"


class TokenScope(Unauthorized):
    """This route needs a token of another scope."""

    code = "ERR_TOKEN_SCOPE"


class IssuerUnavailable(BrokerError):
    """The token's identity provider does not answer and its keys are no longer cached;
    retry later."""

    code = "ERR_ISSUER_UNAVAILABLE"
    status = 503


class PolicyNotAllowed(BrokerError):
    """The token does not grant this upload policy."""

    code = "ERR_POLICY_NOT_ALLOWED"
    status = 403


class Forbidden(BrokerError):
    """This needs an admin token."""

    code = "ERR_FORBIDDEN"
    status = 403


class WebhookUnauthorized(BrokerError):
    """The webhook token is missing or wrong."""

    code = "ERR_WEBHOOK_UNAUTHORIZED"
    status = 401


class UploadNotFound(BrokerError):
    """No such upload."""

    code = "ERR_UPLOAD_NOT_FOUND"
    status = 404


class UploadNotFinalized(BrokerError):
    """The upload is not finalized, so it cannot be downloaded."""

    code = "ERR_UPLOAD_NOT_FINALIZED"
    status = 409


class OriginNotAllowed(BrokerError):
    """This browser origin may not use the broker (BROKER_CORS_ORIGINS)."""

    code = "ERR_ORIGIN_NOT_ALLOWED"
    status = 403


class UploadScanning(BrokerError):
    """The upload is being scanned for malware; it can be downloaded once found clean."""

    code = "ERR_UPLOAD_SCANNING"
    status = 409


class UploadQuarantined(BrokerError):
    """The malware scanner found the upload infected; it cannot be downloaded."""

    code = "ERR_UPLOAD_QUARANTINED"
    status = 409


class UploadNotQuarantined(BrokerError):
    """Only a quarantined upload can be released."""

    code = "ERR_UPLOAD_NOT_QUARANTINED"
    status = 409


class ObjectMissing(Exception):
    """The object an upload points at is not in storage (not a client error)."""


class RouteNotFound(BrokerError):
    """No such route."""

    code = "ERR_NOT_FOUND"
    status = 404


class MethodNotAllowed(BrokerError):
    """This method is not allowed on this route."""

    code = "ERR_METHOD_NOT_ALLOWED"
    status = 405


class DatabaseUnavailable(BrokerError):
    """The database is unavailable; retry later."""

    code = "ERR_DATABASE_UNAVAILABLE"
    status = 503


class StorageUnavailable(BrokerError):
    """Object storage is unavailable; retry later."""

    code = "ERR_STORAGE_UNAVAILABLE"
    status = 503


class NotReady(BrokerError):
    """A dependency of the broker is unreachable."""

    code = "ERR_NOT_READY"
    status = 503


class WebhookEndpointNotFound(BrokerError):
    """No such webhook endpoint."""

    code = "ERR_WEBHOOK_ENDPOINT_NOT_FOUND"
    status = 404


class WebhookDeliveryNotFound(BrokerError):
    """No such webhook delivery."""

    code = "ERR_WEBHOOK_DELIVERY_NOT_FOUND"
    status = 404


class InvalidWebhookUrl(BrokerError):
    """The webhook endpoint URL is not acceptable."""

    code = "ERR_INVALID_WEBHOOK_URL"
    status = 422


class UnknownEventType(BrokerError):
    """No webhook event has this type."""

    code = "ERR_UNKNOWN_EVENT_TYPE"
    status = 422


class DeliveryNotDead(BrokerError):
    """Only a dead delivery can be retried; a pending one is still being tried."""

    code = "ERR_DELIVERY_NOT_DEAD"
    status = 409

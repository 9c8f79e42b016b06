"""Amazon SES (v2 API): ``ses+api://ACCESS_KEY_ID:SECRET@default?region=eu-west-2``.

SES takes our finished RFC 5322 message as it is (``SendEmail`` with ``Content.Raw``), so every
header we wrote survives untouched: ``List-Unsubscribe``, ``List-Unsubscribe-Post``,
``Message-ID`` (SES adds its own id in a separate header) and the DKIM-relevant ones. One call
sends one message, and the transport takes one message per ``send()`` (``max_batch = 1``): the
ledger then records every message right after SES accepted it, as with SMTP, so a crash can
leave at most one message per worker sent but unrecorded.

Quotas are per second and per 24 hours. "Maximum sending rate exceeded" (a throttling error) is
waited out briefly and otherwise handed back as ``retry``; "Daily message quota exceeded"
stops the send with a clear message, because nothing will get through until the window moves
on. Bad credentials, a paused or suspended account and an unverified sender stop it too.

Without a key id and secret in the DSN, boto3's usual chain applies (environment, instance
role). ``boto3`` is an optional extra: ``pip install 'labourlist-mailer[ses]'``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mailer.config import Settings
from mailer.errors import TransportError
from mailer.transports import register
from mailer.transports.base import Outgoing, Result, Transport
from mailer.transports.dsn import Dsn
from mailer.transports.http import (
    CONNECT_TIMEOUT,
    DEFAULT_MAX_WAIT,
    DEFAULT_TIMEOUT,
    SendStopped,
    backoff,
    check_endpoint,
)

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
    )
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise TransportError(
        f"the ses+api:// transport needs {exc.name or 'boto3'}: "
        "pip install 'labourlist-mailer[ses]'"
    ) from None

MAX_RETRIES = 4
THROTTLING = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException",
                        "LimitExceededException"})
CREDENTIALS = frozenset({"UnrecognizedClientException", "InvalidClientTokenId",
                         "SignatureDoesNotMatch", "AccessDeniedException", "AccessDenied",
                         "InvalidSignatureException", "ExpiredTokenException",
                         "MissingAuthenticationTokenException", "IncompleteSignature"})
ACCOUNT = frozenset({"AccountSuspendedException", "SendingPausedException",
                     "MailFromDomainNotVerifiedException", "NotFoundException"})
SERVER = frozenset({"InternalFailure", "InternalServerError", "ServiceUnavailable",
                    "ServiceUnavailableException"})


class SesTransport(Transport):
    """Amazon SES v2 ``SendEmail`` with raw MIME, one message per call."""

    name = "ses"
    max_batch = 1

    def __init__(
        self,
        *,
        region: str,
        key_id: str = "",
        secret: str = "",
        endpoint: str = "",
        configuration_set: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        max_wait: float = DEFAULT_MAX_WAIT,
        user_agent: str = "LabourListMailer",
    ) -> None:
        if bool(key_id) != bool(secret):
            raise TransportError("MAILER_DSN for SES needs both the access key id and the "
                                 "secret (or neither, to use the AWS credential chain)")
        self.region = region
        self._key_id = key_id
        self._secret = secret
        self.endpoint = check_endpoint(endpoint) if endpoint else ""
        self.configuration_set = configuration_set
        self.timeout = timeout
        self.max_wait = max_wait
        self.user_agent = user_agent
        self._client: Any = None
        self._pending_stop: SendStopped | None = None
        #: How the transport waits; tests replace it to check waits without sleeping.
        self.sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_dsn(cls, dsn: Dsn, settings: Settings) -> SesTransport:
        """``ses+api://ID:SECRET@default?region=eu-west-2[&configuration_set=…&endpoint=…]``."""
        dsn.check_options({"region", "endpoint", "timeout", "max_wait", "configuration_set"})
        region = dsn.options.get("region") or ""
        if not region:
            region = boto3.session.Session().region_name or ""
        if not region:
            raise TransportError("MAILER_DSN for SES needs ?region=, e.g. "
                                 "ses+api://ID:SECRET@default?region=eu-west-2")
        return cls(
            region=region,
            key_id=dsn.user,
            secret=dsn.password,
            endpoint=dsn.options.get("endpoint", ""),
            configuration_set=dsn.options.get("configuration_set", ""),
            timeout=dsn.float_option("timeout", DEFAULT_TIMEOUT),
            max_wait=dsn.float_option("max_wait", DEFAULT_MAX_WAIT),
            user_agent=settings.user_agent,
        )

    def __repr__(self) -> str:
        return f"<SesTransport region={self.region} endpoint={self.endpoint or 'aws'}>"

    # ---- Transport interface ---------------------------------------------------------------
    def open(self) -> bool:
        """Build the boto3 client (no network traffic; ``check()`` tests the credentials)."""
        if self._client is not None:
            return False
        session = boto3.session.Session(
            aws_access_key_id=self._key_id or None,
            aws_secret_access_key=self._secret or None,
            region_name=self.region,
        )
        config = Config(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=self.timeout,
            # Our own bounded retries decide what is safe to send again (see send()).
            retries={"total_max_attempts": 1, "mode": "standard"},
            user_agent_extra=f"{self.user_agent.split()[0]} ses-transport",
        )
        self._client = session.client("sesv2", endpoint_url=self.endpoint or None,
                                      config=config)
        return True

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def send(self, messages: list[Outgoing]) -> list[Result]:
        """One Result per message, in order; `SendStopped` only before anything was sent
        in this call (a later stop is raised by the next call)."""
        if self._pending_stop is not None:
            exc, self._pending_stop = self._pending_stop, None
            raise exc
        self.open()
        results: list[Result] = []
        for message in messages:
            if self._pending_stop is not None:
                results.append(Result("retry", error="not sent: the send is stopping"))
                continue
            try:
                results.append(self._send_one(message))
            except SendStopped as exc:
                if not results:
                    raise
                self._pending_stop = exc
                results.append(Result("retry", error="not sent: the send is stopping"))
        return results

    def _send_one(self, message: Outgoing) -> Result:
        request: dict[str, Any] = {
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {"Raw": {"Data": message.data}},
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
            if message.delivery_id is not None:
                request["EmailTags"] = [{"Name": "delivery_id",
                                         "Value": str(message.delivery_id)}]
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self._client.send_email(**request)
            except ClientError as exc:
                outcome = self._client_error(exc, message)
            except (EndpointConnectionError, ConnectTimeoutError) as exc:
                outcome = Result("retry", error=f"ses unreachable: {type(exc).__name__}")
            except NoCredentialsError:
                raise SendStopped("ses: no AWS credentials found: put the key id and secret "
                                  "in MAILER_DSN or configure the AWS credential chain") from None
            except BotoCoreError as exc:
                # A read timeout or a dropped connection after the request went out.
                return Result("ambiguous", error=f"ses: no answer after the request was sent "
                                                 f"({type(exc).__name__}); outcome unknown")
            else:
                return Result("sent", provider_id=str(answer.get("MessageId", "")))
            if outcome.status != "retry":
                return outcome
            wait = backoff(attempt)
            if attempt > MAX_RETRIES or waited + wait > self.max_wait:
                return outcome
            self.sleep(wait)
            waited += wait

    def _client_error(self, exc: ClientError, message: Outgoing) -> Result:
        """Map an SES error to a Result (``retry`` means "may wait and try again"), or raise
        SendStopped when no further message could go out either."""
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        text = " ".join(str(error.get("Message", "")).split())
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        detail = f"ses {code}: {text}" if text else f"ses {code or status}"
        lowered = text.lower()
        if code in CREDENTIALS or status in (401, 403):
            raise SendStopped(f"ses refused our credentials ({code or status}): "
                              "check your API key (access key id and secret)")
        if code in THROTTLING or status == 429:
            if "daily" in lowered or "24 hour" in lowered or "quota" in lowered:
                raise SendStopped(f"ses daily sending quota exceeded ({text}): sending stops "
                                  "until the 24-hour window moves on; run the send again later")
            return Result("retry", error=detail)
        if code in ACCOUNT:
            raise SendStopped(f"ses cannot send: {detail}")
        if code in SERVER or status >= 500:
            return Result("retry", error=detail)
        if code == "MessageRejected" and "not verified" in lowered:
            if message.recipient.lower() in lowered:  # sandbox: an unverified recipient
                return Result("failed", error=detail)
            raise SendStopped(f"ses: the sender is not verified: {text}")
        if code == "BadRequestException" and "address" not in lowered:
            raise SendStopped(f"ses refused the request: {detail}")
        return Result("failed", error=detail)

    def check(self) -> str:
        """``GetAccount``: credentials, sending enabled, sandbox or production, quota."""
        fresh = self.open()
        try:
            try:
                account = self._client.get_account()
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = error.get("Code", "")
                if code in CREDENTIALS:
                    raise TransportError(f"ses refused our credentials ({code}): check your "
                                         "API key (access key id and secret)") from None
                raise TransportError(f"ses: {code}: {error.get('Message', '')}") from None
            except NoCredentialsError:
                raise TransportError("ses: no AWS credentials found") from None
            except BotoCoreError as exc:
                raise TransportError(f"ses: cannot reach SES ({type(exc).__name__})") from None
        finally:
            if fresh:
                self.close()
        if not account.get("SendingEnabled", True):
            raise TransportError(f"ses: sending is disabled for this account in {self.region}")
        quota = account.get("SendQuota", {})
        summary = (f"ses {self.region}: credentials ok, "
                   f"{quota.get('SentLast24Hours', 0):.0f} of {quota.get('Max24HourSend', 0):.0f}"
                   f" sent in 24h, max {quota.get('MaxSendRate', 0):g}/s")
        if not account.get("ProductionAccessEnabled", True):
            summary += "; warning: sandbox account (verified recipients only)"
        return summary


register("ses+api", SesTransport.from_dsn)

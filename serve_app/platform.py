"""What the routes share inside one ingress replica: settings, auth, the stores, the scheduler and
the modality handles.

The ingress deployment makes one `Platform` when its replica starts; routes reach it through the
`platform` dependency. Every model call goes through `call` or `stream`, which hold a scheduler
grant around the handle call and charge what the call really used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request

from dag.records import WorkflowStore
from deployments.types import LLMChunk, LLMRequest
from modalities import SERVICES, cost_models
from modalities.llm import MAX_TOKENS_CONTEXT
from modalities.metering import Meter, MeteredCall, UsageLedger, requested_usage, used
from modalities.transport import handle_for
from scheduler.client import SchedulerClient
from scheduler.costs import Usage
from serve_app.auth import Principal, TokenVerifier, bearer_token
from serve_app.capacity import follow_capacity
from serve_app.errors import ApiError, http_error_of
from serve_app.keys import PREFIX as API_KEY_PREFIX
from serve_app.keys import ApiKeys
from serve_app.settings import Settings
from serve_app.signed_urls import UrlSigner
from state.store import StateStore

log = logging.getLogger(__name__)

# Status of a modality is asked of its replicas at most this often.
STATUS_TTL_S = 5.0


class Platform:
    """The ingress's view of the platform."""

    def __init__(
        self,
        settings: Settings,
        handles: dict[str, Any],
        scheduler: SchedulerClient,
        store: StateStore,
        workflows: WorkflowStore,
        executor: Any,
        app_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.handles = handles
        self.scheduler = scheduler
        self.store = store
        self.workflows = workflows
        self.executor = executor
        self.costs = cost_models(settings.scheduler.cost_models)
        self.meter = Meter(scheduler, self.costs, UsageLedger(store))
        self.verifier = TokenVerifier(settings.jwt_verify_key, settings.jwt_algorithm)
        self.keys = ApiKeys(store, settings.api_key_secret)
        self.url_signer = UrlSigner(settings.api_key_secret)
        self._status: dict[str, tuple[float, dict[str, Any]]] = {}
        self._background: list[asyncio.Task[None]] = []
        self.app_name = app_name

    def start_background_tasks(self) -> None:
        """Start the replica's loops once, from its event loop (the constructor runs outside it)."""
        if not self._background and self.app_name:
            loop = asyncio.get_running_loop()
            self._background.append(loop.create_task(follow_capacity(self, self.app_name)))

    @property
    def params_context(self) -> dict[str, Any]:
        """The validation context of modality params: the limits this deployment sets
        (`modalities.llm.LLMParams` reads the model's `max_tokens` limit from it)."""
        return {MAX_TOKENS_CONTEXT: self.settings.llm_max_tokens}

    # -------------------------------------------------------------- auth

    async def authenticate(self, request: Request) -> Principal:
        """The caller of a JWT or of an API key (a JWT never starts with `lbk_`: it is base64 JSON).

        A JWT is checked on the event loop (microseconds, no I/O); a key is read from the state
        store in a thread, so a slow store never stalls the replica's other requests.
        """
        return await self.verify_token(bearer_token(request.headers.get("authorization")))

    async def verify_token(self, token: str) -> Principal:
        """The caller of a bearer token (a JWT or an API key), as `authenticate` checks it."""
        if token.startswith(API_KEY_PREFIX):
            return await asyncio.to_thread(self.keys.verify, token)
        return self.verifier.verify(token)

    # -------------------------------------------------------------- models

    def forget_status(self, service: str) -> None:
        """Drop a service's cached status, so that the next read asks its replicas (after an admin's
        change of its backends; other ingress replicas see it within `STATUS_TTL_S`)."""
        self._status.pop(service, None)

    async def status(self, service: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """The modality's readiness and backends, cached briefly; a silent replica is not ready."""
        cached = self._status.get(service)
        if cached and time.monotonic() - cached[0] < STATUS_TTL_S:
            return cached[1]
        try:
            status = await asyncio.wait_for(self.handles[service].status.remote(), timeout_s)
        except asyncio.TimeoutError:
            return {
                "service": service,
                "ready": False,
                "reason": "the deployment did not answer in time",
                "backends": [],
            }
        except Exception as exc:  # a replica that is starting or failed: report, don't raise
            return {"service": service, "ready": False, "reason": f"the deployment failed: {exc}", "backends": []}
        self._status[service] = (time.monotonic(), status)
        return status

    async def all_status(self) -> dict[str, dict[str, Any]]:
        results = await asyncio.gather(*(self.status(s) for s in SERVICES))
        return dict(zip(SERVICES, results, strict=True))

    async def resolve_model(self, name: str | None, services: tuple[str, ...]) -> str:
        """The service that serves the model `name`: a service name, or a backend's model name."""
        if name is None or name.lower() in services:
            return (name or services[0]).lower()
        for service in services:
            status = await self.status(service)
            if any(b["model"] == name for b in status.get("backends", [])):
                return service
        raise ApiError(404, "model_not_found", f"the model {name!r} does not exist; GET /v1/models lists the models")

    async def executor_call(self, method: str, *args: Any) -> Any:
        """A call on the workflow executor, with its errors (409 and so on) as HTTP errors."""
        try:
            return await getattr(self.executor, method).remote(*args)
        except Exception as exc:
            error = http_error_of(exc)
            if error is None:
                raise
            raise error from None

    # -------------------------------------------------------------- calls

    @asynccontextmanager
    async def admitted(
        self, service: str, request: Any, principal: Principal, priority: str = "default"
    ) -> AsyncIterator[MeteredCall]:
        """An interactive call's grant, with every error inside turned into its HTTP error.

        `priority` orders the call among its own tenant's (a realtime session's turns are
        `critical`); it never lets the tenant overtake another's fair share.

        Interactive calls do not wait on their tenant's quota: over it, they get 429 at once. They
        wait their turn in a busy service's fair queue, but at most `interactive_max_wait_s`: then
        503 with Retry-After, rather than a request that hangs until the client gives up.
        """
        estimate = self.meter.estimate(service, request)
        max_wait_s = self.settings.scheduler.interactive_max_wait_s
        try:
            async with self.meter.admitted(
                service, principal.tenant, estimate, priority=priority, wait=False, max_wait_s=max_wait_s
            ) as call:
                yield call
                log.info(
                    "model call",
                    extra={"tenant": principal.tenant, "service": service, "cost": call.admission.actual_cost},
                )
        except Exception as exc:
            error = http_error_of(exc)
            if error is None or error is exc:
                raise
            raise error from exc

    async def call(self, service: str, request: Any, principal: Principal, priority: str = "default") -> Any:
        """One interactive model call, charged what it used."""
        async with self.admitted(service, request, principal, priority) as call:
            result = await handle_for(self.handles[service], request).run.remote(request)
            self.meter.charge(call, used(service, request, result))
            return result

    async def stream(
        self, service: str, request: LLMRequest, principal: Principal, priority: str = "default"
    ) -> AsyncIterator[LLMChunk]:
        """A streamed interactive call (`llm`); the grant is held until the stream ends.

        A client that leaves mid-stream is charged what was generated until then: the engines
        stream a token a chunk, and the prompt as its estimate from its length.
        """
        async with self.admitted(service, request, principal, priority) as call:
            handle = handle_for(self.handles[service], request).options(stream=True)
            prompt = requested_usage(service, request)
            generated = 0
            try:
                async for chunk in handle.stream.remote(request):
                    generated += bool(chunk.text)
                    if chunk.finish_reason is not None:
                        self.meter.charge(
                            call, Usage(prompt_tokens=chunk.prompt_tokens, output_tokens=chunk.completion_tokens)
                        )
                    yield chunk
            finally:
                if call.usage is None:
                    self.meter.charge(call, Usage(characters=prompt.characters, output_tokens=generated))

"""The HTTP ingress: a FastAPI app under `@serve.ingress`, and the builder that `serve run` names."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.handle import DeploymentHandle

from dag.executor import executor_actor
from dag.records import WorkflowStore
from deployments.serving import modality_deployment
from modalities import SERVICES
from scheduler.client import SchedulerClient, scheduler_actor
from serve_app.deps import current_settings, set_platform
from serve_app.errors import UNAVAILABLE_RETRY_AFTER_S, install_error_handlers
from serve_app.middleware import BodyLimitMiddleware, RequestMetricsMiddleware
from serve_app.platform import Platform
from serve_app.routes import (
    admin,
    admin_models,
    audio,
    avatars,
    batches,
    chat,
    completions,
    console,
    embeddings,
    files,
    health,
    images,
    keys,
    models,
    realtime,
    responses,
    usage,
    videos,
)
from serve_app.routes import workflows as workflow_routes
from serve_app.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """Labubu: multi-tenant, multimodal AI serving on Ray Serve.

Every route but `/healthz`, `/readyz`, `/docs` and `/openapi.json` takes `Authorization: Bearer <JWT or API key>`.
Errors are `{"error": {"code", "message", "details"}}`."""


def create_app() -> FastAPI:
    # No redirects for a trailing slash: every answer is a documented status (a 404 for a path we lack).
    app = FastAPI(title="Labubu AI Platform", version="1.0.0", description=DESCRIPTION, redirect_slashes=False)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, settings=current_settings)
    app.add_middleware(RequestMetricsMiddleware)
    app.include_router(health.router)
    openai_resources = (
        chat,
        completions,
        responses,
        files,
        batches,
        audio,
        images,
        videos,
        realtime,
        embeddings,
        models,
    )
    for openai_resource in openai_resources:
        app.include_router(openai_resource.router)
    app.include_router(avatars.router)
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(admin_models.router)
    app.include_router(usage.router)
    app.include_router(workflow_routes.router)
    app.include_router(console.router)
    return app


app = create_app()


@serve.deployment(
    name="ingress",
    # An interactive call may hold its slot while it waits its turn in the scheduler (up to
    # `scheduler.interactive_max_wait_s`): at 3x capacity (benchmarks/load.py --overload) hundreds
    # are in flight. Beyond them a short queue, then Serve's proxy answers 503 with Retry-After at
    # once instead of queueing without bound until the client times out.
    max_ongoing_requests=1000,
    max_queued_requests=100,
    backpressure_config=BackpressureConfig(status_code=503, retry_after_s=UNAVAILABLE_RETRY_AFTER_S),
    ray_actor_options={"num_cpus": 0.1},
    graceful_shutdown_timeout_s=30,
    # JSON lines; Serve adds the request id, route and replica, our lines add tenant and service.
    logging_config={"encoding": "JSON"},
)
@serve.ingress(app)
class Ingress:
    """The replica that serves HTTP; it holds a handle to each modality deployment.

    `args` are the settings without their secrets (`Settings.public_args`): the replica loads its
    settings from them and from its own environment, which alone holds the secrets. It gets or
    makes the scheduler and the workflow executor, handing each its config (a redeploy's new one
    to actors that outlived the old deployment) and where the stores are, never an opened store.
    """

    def __init__(self, args: dict[str, Any], **handles: DeploymentHandle) -> None:
        settings = Settings.load(args)
        stores = settings.stores()
        store = stores.state()
        workflows = WorkflowStore(store, stores.artifacts())
        scheduler_handle = scheduler_actor(settings.scheduler_config(), stores.state)
        app_name = serve.get_replica_context().replica_id.deployment_id.app_name
        executor = executor_actor(stores, scheduler_handle, settings.executor_config(app_name))
        scheduler = SchedulerClient(scheduler_handle, settings.scheduler.lease_s)
        set_platform(Platform(settings, handles, scheduler, store, workflows, executor, app_name))


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """The whole application: the ingress and a deployment per modality.

    `serve_config.yaml` names this builder; its `args` are the settings' app args (see README).
    Serve keeps every argument bound here in clear, so none is secret: each deployment gets its
    typed config and where the stores are, and reads its secrets from its own environment.
    """
    settings = Settings.read(args)
    options = settings.deployment_options
    # The modality replicas read an admin's arrangement of their backends from the state store.
    open_store = settings.stores().state
    handles = {
        service: modality_deployment(service)
        .options(**options.get(service, {}))
        .bind(settings.service_config(service), open_store)
        for service in SERVICES
    }
    ingress: Any = Ingress  # a serve.Deployment once decorated; mypy sees the class
    return ingress.options(**options.get("ingress", {})).bind(settings.public_args(), **handles)

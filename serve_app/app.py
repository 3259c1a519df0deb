"""The HTTP ingress: a FastAPI app under `@serve.ingress`, and the builder that `serve run` names."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from dag.executor import executor_actor
from dag.records import WorkflowStore
from deployments.serving import modality_deployment
from deployments.types import SERVICES
from scheduler.client import SchedulerClient, scheduler_actor
from serve_app.deps import current_settings, set_platform
from serve_app.errors import install_error_handlers
from serve_app.middleware import BodyLimitMiddleware, RequestMetricsMiddleware
from serve_app.platform import Platform
from serve_app.routes import admin, console, health, keys, models, openai, usage
from serve_app.routes import workflows as workflow_routes
from serve_app.settings import Settings
from state.artifacts import open_artifacts
from state.store import open_store

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
    app.include_router(openai.router)
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(models.router)
    app.include_router(usage.router)
    app.include_router(workflow_routes.router)
    app.include_router(console.router)
    return app


app = create_app()


@serve.deployment(
    name="ingress",
    max_ongoing_requests=200,
    ray_actor_options={"num_cpus": 0.1},
    graceful_shutdown_timeout_s=30,
    # JSON lines; Serve adds the request id, route and replica, our lines add tenant and service.
    logging_config={"encoding": "JSON"},
)
@serve.ingress(app)
class Ingress:
    """The replica that serves HTTP; it holds a handle to each modality deployment."""

    def __init__(self, settings: dict[str, Any], **handles: DeploymentHandle) -> None:
        config = Settings.from_dict(settings)
        store = open_store(config.redis_url, config.data_path)
        artifacts = open_artifacts(config.s3_bucket, config.s3_endpoint_url, config.data_path)
        workflows = WorkflowStore(store, artifacts)
        scheduler_handle = scheduler_actor(config.scheduler_config(), store)
        app_name = serve.get_replica_context().replica_id.deployment_id.app_name
        executor_config = {
            **config.workflows,
            "app_name": app_name,
            "cost_models": config.scheduler.get("cost_models", {}),
        }
        executor = executor_actor(workflows, scheduler_handle, executor_config)
        platform = Platform(config, handles, SchedulerClient(scheduler_handle), store, workflows, executor, app_name)
        set_platform(platform)


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """The whole application: the ingress and the five modality deployments.

    `serve_config.yaml` names this builder; its `args` are the settings' app args (see README).
    """
    settings = Settings.load(args)
    options = settings.deployment_options
    # The modality replicas read an admin's arrangement of their backends from the state store.
    store = open_store(settings.redis_url, settings.data_path)
    handles = {
        service: modality_deployment(service)
        .options(**options.get(service, {}))
        .bind(service, settings.services[service], store)
        for service in SERVICES
    }
    ingress: Any = Ingress  # a serve.Deployment once decorated; mypy sees the class
    return ingress.options(**options.get("ingress", {})).bind(settings.to_dict(), **handles)

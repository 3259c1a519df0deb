"""What the platform's detached actors (the scheduler, the workflow executor) share."""

from __future__ import annotations


def restarted_by_ray() -> bool:
    """Whether Ray restarted this actor after it died (False when the class runs outside an actor,
    as in the in-process tests)."""
    import ray  # here, not at the top: `common` imports no Ray for the packages that must not

    context = ray.get_runtime_context()
    return context.get_actor_id() is not None and bool(context.was_current_actor_reconstructed)

"""How a caller's handle reaches a modality replica for one call: by value or by reference.

By value (`handle.options(_by_reference=False)`), Serve sends the call straight to the replica's
gRPC server instead of as a Ray actor task, and the answer comes back the same way: about 2 ms
less a call on a 2-core machine (`benchmarks/serve_overhead.py`). But Serve caps those messages at
4 MB each way (`RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH`), and a bigger one fails the call. So a
call goes by value only when its request and its answer are sure to stay far below the cap, by the
bound its modality declares (`Modality.payload_bound`): a chat, a sentence to embed or to speak, a
short recording, a small image. The rest go by reference, through Ray's object store, which has no
such limit.
"""

from __future__ import annotations

from typing import Any

from modalities import MODALITIES

# A quarter of Serve's cap: the bounds are estimates.
BY_VALUE_MAX_BYTES = 1 << 20

_BY_REQUEST = {m.request_type: m for m in MODALITIES.values()}


def payload_bound(request: Any) -> int:
    """An upper bound of the bytes one call carries; a request of no modality is unbounded."""
    modality = _BY_REQUEST.get(type(request))
    return modality.payload_bound(request) if modality is not None else BY_VALUE_MAX_BYTES + 1


def by_value(request: Any) -> bool:
    return payload_bound(request) <= BY_VALUE_MAX_BYTES


def handle_for(handle: Any, request: Any) -> Any:
    """The handle to make this call with: by value when it is small, else the handle as it is."""
    return handle.options(_by_reference=False) if by_value(request) else handle

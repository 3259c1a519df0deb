"""What every modality declares (`Modality`), and the vocabulary the declarations share: the kinds of
data that flow between services, node outputs, the composition of a node's input, and params.

A modality is one module of this package with one `Modality` subclass: the rest of the platform
(workflow validation and execution, the HTTP routes, metering, the transport of calls, settings)
looks the modality up and asks it, and never branches on a service name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from deployments.config import DEFAULT_TIMEOUT_S
from scheduler.costs import CostModel, Usage

# The kinds of data a service consumes and produces (workflow edges are typed by them).
TEXT = "text"
AUDIO = "audio"
IMAGE = "image"
VIDEO = "video"
VECTOR = "vector"  # an embedding; no service consumes one, so an `embed` node is always a sink

TEXT_TYPE = "text/plain; charset=utf-8"
VECTOR_TYPE = "application/json"


def kind_of(content_type: str) -> str:
    """`text`, `audio`, `image`, `video` or `vector`, from a content type."""
    if content_type.startswith("audio/"):
        return AUDIO
    if content_type.startswith("image/"):
        return IMAGE
    if content_type.startswith("video/"):
        return VIDEO
    if content_type == VECTOR_TYPE:
        return VECTOR
    return TEXT


@dataclass(frozen=True)
class Output:
    """A node's output (or a media input): bytes with their content type."""

    data: bytes
    content_type: str

    @property
    def kind(self) -> str:
        return kind_of(self.content_type)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")

    @classmethod
    def of_text(cls, text: str) -> Output:
        return cls(text.encode("utf-8"), TEXT_TYPE)


def compose(parts: list[str | Output]) -> tuple[str, list[Output]]:
    """The joined text parts (empty ones skipped) and the media parts, in order."""
    texts: list[str] = []
    media: list[Output] = []
    for part in parts:
        if isinstance(part, str):
            if part:
                texts.append(part)
        elif part.kind == TEXT:
            if part.data:
                texts.append(part.text)
        else:
            media.append(part)
    return "\n".join(texts), media


# ---------------------------------------------------------------- params

# The engines take 32-bit seeds (llama.cpp, and torch after `seed + i`); a larger or negative one
# would be wrapped, or crash the call, so it is a 422 at the door.
MAX_SEED = 2**32 - 1
Seed = Annotated[int | None, Field(ge=0, le=MAX_SEED)]


class Params(BaseModel):
    """A modality's knobs for a task or workflow node; unknown fields are a 422."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- payload bounds

# Bounds of what one call carries, for the transport's choice between by value and by reference
# (modalities/transport.py): estimates, with room to spare.
SMALL_ANSWER_BYTES = 64 * 1024  # a caption, a transcript
UNBOUNDED = 1 << 62  # a request whose size nothing bounds goes by reference


# ---------------------------------------------------------------- the descriptor

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")
ParamsT = TypeVar("ParamsT", bound=Params)


class Modality(Generic[RequestT, ResultT, ParamsT]):
    """Everything the platform knows of one modality; a module makes one instance of a subclass.

    Class attributes declare the data; methods turn params and composed inputs into requests,
    results into outputs, and both into the usage that is charged.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()  # other names a client may use (case does not matter)
    request_type: ClassVar[type]
    result_type: ClassVar[type]
    params: ClassVar[type[Params]]

    consumes: ClassVar[str]  # the kind of upstream output it takes
    produces: ClassVar[str]
    content_type: ClassVar[str]  # of its output, as stored and served
    media_inputs: ClassVar[tuple[int, int | None]] = (0, 0)  # media parts it takes: (at least, at most)
    # Media it takes beside the text it consumes (text2video: an image to start from).
    media_kind: ClassVar[str | None] = None
    max_text: ClassVar[int | None] = None  # the longest composed text it takes, in characters

    cost_model: ClassVar[CostModel]  # the default; the Serve config may override its terms

    # The backends it can use, by the name the config uses, as "module:Class" (imported only in the
    # replica that builds one), and the failover list it has when the config names none.
    backends: ClassVar[Mapping[str, str]]
    default_backends: ClassVar[tuple[str, ...]]
    # The random-weight fixtures that stand in for hub models offline (LABUBU_IMAGE_BACKENDS=tiny-random).
    offline_backends: ClassVar[tuple[str, ...] | None] = None
    timeout_s: ClassVar[float] = DEFAULT_TIMEOUT_S  # a backend that has not answered by then has failed
    # Its calls are long and stream `Progress` chunks before their result (the replica's `stream`).
    reports_progress: ClassVar[bool] = False

    def build_request(self, params: ParamsT, text: str, media: list[Output]) -> RequestT:
        """The request of a task or node, from its composed input and its validated params."""
        raise NotImplementedError

    def output(self, result: ResultT) -> Output:
        """The result as a node output."""
        raise NotImplementedError

    def requested_usage(self, request: RequestT) -> Usage:
        """The usage a request asks for, before it runs (the scheduler's estimate)."""
        raise NotImplementedError

    def used(self, request: RequestT, result: ResultT) -> Usage:
        """The usage the call really had, from what the backend reported."""
        return self.requested_usage(request)

    def details(self, result: ResultT) -> dict[str, Any]:
        """What a node's record keeps of a result beside its output (what the backend really made)."""
        return {}

    def in_background(self, request: RequestT) -> RequestT:
        """The request as `low`-priority work, for backends that run such calls behind the others
        (llm: a background generation yields the engine at its next token; embed: the encoder runs
        at the lowest CPU priority). Unchanged by default."""
        return request

    def takes(self, kind: str) -> bool:
        """Whether an input of this kind (an upstream output, or a node's own input) can go in."""
        return kind in (self.consumes, self.media_kind)

    def payload_bound(self, request: RequestT) -> int:
        """An upper bound of the bytes one call carries: its request's payload and its answer."""
        return UNBOUNDED

    def validate_params(self, params: Mapping[str, Any]) -> ParamsT:
        """The params model of a mapping (raises pydantic's ValidationError)."""
        return self.params.model_validate(params)  # type: ignore[return-value]

"""The LLM task types: their prompts, and the params that choose them (422s naming the field)."""

from __future__ import annotations

from typing import Any

import pytest

from dag.errors import InvalidParams
from dag.spec import TaskSubmission
from dag.validate import plan_workflow
from deployments.types import LLMRequest
from modalities import build_request
from modalities.prompts import SUMMARIZE, TRANSLATE, llm_prompt

TEXT = "Ray Serve {runs} models."  # braces of its own: never taken for a placeholder


def test_generate_is_the_input_itself() -> None:
    assert llm_prompt("generate", TEXT) == TEXT


def test_summarize_wraps_the_input() -> None:
    prompt = llm_prompt("summarize", TEXT)
    assert prompt == SUMMARIZE.replace("{input}", TEXT)
    assert prompt.startswith("Summarize the following text") and prompt.endswith("\n\n" + TEXT)


def test_translate_names_the_language() -> None:
    prompt = llm_prompt("translate", TEXT, target_language="French")
    assert prompt == "Translate the following text into French. Reply with the translation only.\n\n" + TEXT
    assert TRANSLATE.count("{input}") == 1 and TRANSLATE.count("{language}") == 1


def test_placeholders_inside_the_input_are_not_expanded() -> None:
    text = "keep {language} and {input} as typed"
    assert llm_prompt("translate", text, target_language="German").endswith("\n\n" + text)
    assert llm_prompt("template", text, template="<{input}>") == f"<{text}>"


def test_template_replaces_every_input_and_keeps_other_braces() -> None:
    assert llm_prompt("template", "x", template='{"q": "{input}"} then {input} {other}') == '{"q": "x"} then x {other}'


def test_build_request_sends_the_tasks_prompt_after_the_system_message() -> None:
    params = {"task": "translate", "target_language": "French", "system": "Be brief.", "max_tokens": 7}
    request = build_request("llm", params, "Good morning.", [])
    assert isinstance(request, LLMRequest) and request.max_tokens == 7
    assert [(m.role, m.content) for m in request.messages or []] == [
        ("system", "Be brief."),
        ("user", llm_prompt("translate", "Good morning.", target_language="French")),
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"task": "translate"}, "target_language"),
        ({"task": "translate", "target_language": "  "}, "target_language"),
        ({"task": "template"}, "template"),
        ({"task": "template", "template": "no placeholder"}, "template"),
        ({"task": "poem"}, "task"),
        ({"task": "summarize", "target_language": "French"}, "target_language"),
        ({"target_language": "French"}, "target_language"),
        ({"task": "translate", "target_language": "French", "template": "{input}"}, "template"),
    ],
)
def test_bad_combinations_are_422_naming_the_field(params: dict[str, Any], field: str) -> None:
    task = TaskSubmission.model_validate({"service": "llm", "prompt": "x", "params": params})
    with pytest.raises(InvalidParams) as caught:
        plan_workflow(task.as_workflow())
    assert caught.value.status == 422
    assert [d["field"] for d in caught.value.details] == [f"nodes.task.params.{field}"]


def test_good_combinations_are_kept_as_given() -> None:
    params = {"task": "template", "template": "Q: {input}\nA:"}
    plan = plan_workflow(
        TaskSubmission.model_validate({"service": "llm", "prompt": "x", "params": params}).as_workflow()
    )
    assert plan.nodes["task"].params == params

"""The LLM task types and their prompt templates, in one place.

An `llm` task or node says what it wants with `params.task`; the platform turns its composed input
into the prompt the model sees. `{input}` stands for the composed input, `{language}` for
`params.target_language`. Substitution is plain text replacement, never `str.format`, so braces in
a user's text or template are kept as they are, and a placeholder inside the input is not expanded.
"""

from __future__ import annotations

from typing import Literal

Task = Literal["generate", "summarize", "translate", "template"]

INPUT = "{input}"
LANGUAGE = "{language}"

SUMMARIZE = "Summarize the following text in one or two sentences. Reply with the summary only.\n\n" + INPUT
TRANSLATE = f"Translate the following text into {LANGUAGE}. Reply with the translation only.\n\n{INPUT}"


def llm_prompt(task: Task, text: str, target_language: str | None = None, template: str | None = None) -> str:
    """The prompt for `task` on the composed input `text` (params already validated)."""
    if task == "generate":
        return text
    if task == "summarize":
        return SUMMARIZE.replace(INPUT, text)
    if task == "translate":
        # The language first: a text that happens to contain "{language}" stays as written.
        return TRANSLATE.replace(LANGUAGE, str(target_language)).replace(INPUT, text)
    return str(template).replace(INPUT, text)

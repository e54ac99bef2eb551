"""Prompt templates.

LLM-Adapters (Hu et al. 2023), which the NaRA paper's commonsense and math benchmarks follow,
prompts with the Alpaca instruction format, with or without an input block. Its scripts write the
template as an indented triple-quoted string, so the released prompts carry stray indentation; we
use the clean layout (the format, not the accidental whitespace).

The embedded model's prompt template, ``Question: ...`` then ``Answer:`` on its own line
(:func:`nara.data.corpus.render_prompt`), is also written as a chat template
(:data:`EMBEDDED_CHAT_TEMPLATE`), which ``load_model("tiny")`` gives its tokenizer: generation,
evaluation and training then apply it through the one chat-template path, as they apply
LLaDA-8B-Instruct's.
"""

from __future__ import annotations

_PREAMBLE = "Below is an instruction that describes a task"
_REQUEST = "Write a response that appropriately completes the request."


def llm_adapters_prompt(instruction: str, input: str = "") -> str:
    """The LLM-Adapters / Alpaca prompt for `instruction` (and `input` when non-empty).

    The returned text ends with "### Response:\\n"; the answer follows it directly.
    """
    if input:
        return (
            f"{_PREAMBLE}, paired with an input that provides further context. {_REQUEST}\n\n"
            f"### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
        )
    return f"{_PREAMBLE}. {_REQUEST}\n\n### Instruction:\n{instruction}\n\n### Response:\n"


def mbpp_prompt(text: str, tests: list[str]) -> str:
    """The usual MBPP prompt: the task, then the asserts the code must pass."""
    joined = "\n".join(tests)
    return (
        f"You are an expert Python programmer, and here is your task: {text} "
        f"Your code should pass these tests:\n\n{joined}\n"
    )


# A user turn becomes "Question: {text}\nAnswer:\n" (render_prompt's format) unless it is already
# in that format (the embedded tasks' prompts are), so the template never wraps twice; the
# assistant turn is the answer as is, right after the prompt.
EMBEDDED_CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}"
    "{%- if m['content'].startswith('Question: ') and m['content'].endswith('\\nAnswer:\\n') -%}"
    "{{ m['content'] }}"
    "{%- else -%}{{ 'Question: ' + m['content'] + '\\nAnswer:\\n' }}{%- endif -%}"
    "{%- elif m['role'] == 'assistant' -%}{{ m['content'] }}"
    "{%- else -%}{{ m['content'] + '\\n' }}{%- endif -%}"
    "{%- endfor -%}"
)

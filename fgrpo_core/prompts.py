"""The chat prompt every stage shows the policy (SFT, rollouts, evaluation use the same one).

docs/method.md#output-format: the policy answers ``<think>REASONING</think><answer>ANSWER</answer>`` and may
cite regions as ``<bbox>[x1, y1, x2, y2]</bbox>`` in absolute pixels of the image it sees.
"""

from __future__ import annotations

from typing import Any, Sequence

SYSTEM_PROMPT = (
    "You reason about space in images. Think step by step inside <think></think>, citing "
    "objects as <bbox>[x1, y1, x2, y2]</bbox> in pixels, then give the option letter inside "
    "<answer></answer>."
)

LETTERS = "ABCDEFGHIJ"


def format_question(question: str, choices: Sequence[str]) -> str:
    """Question text with lettered options: ``"Q?\\nA. left\\nB. right"``."""
    lines = [question.strip()]
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines)


def build_messages(question: str, choices: Sequence[str], system: str | None = SYSTEM_PROMPT) -> list[dict[str, Any]]:
    """Chat messages (HF multimodal format) with one image placeholder in the user turn."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append(
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": format_question(question, choices)}],
        }
    )
    return messages


def prompt_text(processor, messages: list[dict[str, Any]]) -> str:
    """The prompt as the policy reads it: ``messages`` through the chat template, with the
    assistant turn opened and one placeholder token per image (the processor expands each into
    the image's tokens). ``processor`` is a processor or a tokenizer. The trainer
    (``encode_prompt``), both rollout engines (vLLM's with its own tokenizer) and staging's
    prompt-length count call this."""
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

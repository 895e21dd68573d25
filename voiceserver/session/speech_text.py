"""Pure text helpers for speech: yes/no, keypad answers, the spoken approval question, a workflow's prompt and
result as speech, sentence ends and reply length, and whether the caller asked for a long answer.

Values in, values out: no model, no I/O (the session's dialog, :mod:`voiceserver.session.dialog`, uses them).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

_YES = re.compile(r"\b(yes|yeah|yep|yup|sure|ok|okay|correct|right|please do|go ahead|do it|absolutely|"
                  r"definitely|of course|affirmative|sounds good|that's right|confirm)\b")
_NO = re.compile(r"\b(no|nope|nah|don't|do not|cancel|stop|never mind|nevermind|negative|not now|wait|"
                 r"decline|skip)\b")


def classify_yes_no(text: str) -> Literal["yes", "no"] | None:
    """"yes", "no", or None when the answer is neither (or both)."""
    words = " " + re.sub(r"[^a-z' ]+", " ", text.lower()) + " "
    yes, no = bool(_YES.search(words)), bool(_NO.search(words))
    if yes and not no:
        return "yes"
    if no and not yes:
        return "no"
    return None


def _humanize(name: str) -> str:
    return re.sub(r"[_\-]+", " ", name).strip()


def _render_args(args: dict[str, Any]) -> str:
    parts = []
    for key, value in args.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        parts.append(f"{_humanize(str(key))} {value}")
    return ", ".join(parts)


def approval_question(tool: Any, tool_name: str, args: dict[str, Any]) -> str:
    """What the caller hears when a tool needs approval.

    A tool may define ``approval_prompt``: a format string over its arguments ("Shall I book a table for {people}
    at {time}?") or a callable taking the arguments and returning the question.
    """
    custom = getattr(tool, "approval_prompt", None)
    if callable(custom):
        text = custom(args)
        if isinstance(text, str) and text.strip():
            return text.strip()
    elif isinstance(custom, str) and custom.strip():
        try:
            return custom.format(**args).strip()
        except (KeyError, IndexError, ValueError):
            pass
    rendered = _render_args(args)
    action = _humanize(tool_name)
    return f"Shall I {action}" + (f" with {rendered}" if rendered else "") + "? Please say yes or no."


def workflow_prompt(payload: Any) -> str | None:
    """The question a suspended step wants spoken (its payload's ``prompt``), if any."""
    if isinstance(payload, dict):
        prompt = payload.get("prompt")
        if isinstance(prompt, str) and prompt.strip():
            return prompt.strip()
    return None


def speakable_result(workflow_name: str, result: Any) -> str:
    """A workflow's result as a sentence: its ``message`` / ``text`` / ``summary`` field, else a short rendering."""
    if isinstance(result, str) and result.strip().startswith("{"):
        try:  # results that travelled as JSON text (an agent network's step result)
            result = json.loads(result)
        except json.JSONDecodeError:
            pass
    if isinstance(result, str) and result.strip():
        return result.strip()
    if isinstance(result, dict):
        for key in ("message", "text", "summary", "confirmation"):
            value = result.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        if result:
            return f"Done. {_humanize(workflow_name).capitalize()}: {_render_args(result)}."
    return f"Done. The {_humanize(workflow_name)} is complete."


MAX_REASKS = 2  # a question is asked again at most this many times before it is left for later

# Keys of a phone keypad and what they answer to a yes/no question ("press 1 to confirm, 2 to cancel").
KEYPAD = frozenset("0123456789*#ABCD")
_KEY_ANSWERS: dict[str, Literal["yes", "no"]] = {"1": "yes", "2": "no"}


def keypad_yes_no(digit: str) -> Literal["yes", "no"] | None:
    """"yes" for 1, "no" for 2, None for any other key."""
    return _KEY_ANSWERS.get(digit)


def keypad_question(question: str) -> str:
    """A yes/no question as a phone caller hears it: they may also press a key."""
    return f"{question.rstrip()} You can also press 1 for yes or 2 for no."


def pressed_key_text(digits: str) -> str:
    """What the agent is told when a phone caller presses keys outside any question."""
    return f"(The caller pressed {' '.join(digits)} on the keypad.)"


def wants_digits(schema: Any) -> bool:
    """True when a workflow step's resume schema asks for digits: a single field that is an integer, or a string
    with a digits-only pattern (a PIN, an extension, a menu choice)."""
    json_schema = schema.model_json_schema() if hasattr(schema, "model_json_schema") else schema
    if not isinstance(json_schema, dict):
        return False
    fields = json_schema.get("properties") or {}
    if len(fields) != 1:
        return False
    (spec,) = fields.values()
    if not isinstance(spec, dict):
        return False
    if spec.get("type") == "integer":
        return True
    pattern = spec.get("pattern")
    if spec.get("type") != "string" or not isinstance(pattern, str):
        return False
    return bool(_DIGITS_PATTERN.fullmatch(pattern.removeprefix("^").removesuffix("$")))


# A regular expression that accepts digits only: \d+, [0-9]*, \d{4}, [0-9]{1,6} ...
_DIGITS_PATTERN = re.compile(r"(\\d|\[0-9\])(\+|\*|\{\d+(,\d*)?\})")


_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]»]*$")


def ends_sentence(phrase: str) -> bool:
    """True when a phrase (as cut by the phrase chunker) ends a sentence rather than at a comma or a length cut."""
    return bool(_SENTENCE_END.search(phrase.rstrip()))


def fit_to_chars(text: str, budget: int) -> str:
    """``text`` cut to at most ``budget`` characters at a word boundary ("" when not even one word fits)."""
    if len(text) <= budget:
        return text
    cut = text[: budget + 1].rsplit(" ", 1)[0] if budget > 0 else ""
    return cut if len(cut) <= budget else ""


_LONG_FORM = re.compile(
    r"\b(tell me (a|another) (long |short )?(story|tale|fairy ?tale|joke)|a story|bedtime story|once upon a time|"
    r"in (more |great |full )?detail|at length|step by step|explain (everything|fully|thoroughly|in depth)|"
    r"tell me (all|everything) about|long (answer|version|explanation)|read me|recite|describe .* in detail)\b")


def wants_long_answer(text: str) -> bool:
    """True when the caller asked for a long answer (a story, a detailed explanation): the reply may then run past
    the short voice limit."""
    return bool(_LONG_FORM.search(" ".join(text.lower().split())))


# Words after which a speaker usually goes on: a statement ending on one of them is not finished. Words that can
# end a sentence ("I think so.", "Turn it on.", "What about this?") are left out on purpose.
_CONTINUES = frozenset((
    "and", "or", "but", "because", "if", "which", "who", "whose", "whom", "when", "where", "while", "although",
    "though", "unless", "until", "than", "of", "to", "for", "with", "from", "at", "by", "into", "the", "a", "an",
    "my", "your", "his", "her", "their", "our", "um", "uh", "er", "erm", "hmm", "plus", "either", "neither", "nor",
    "whether",
))
_FILLERS = re.compile(r"(\.\.\.|…|,|;|:|-|–|—)\s*$")


def utterance_complete(text: str) -> bool | None:
    """Whether a transcript reads as a finished turn: True for a complete sentence or question ("What time is
    it?"), False when it trails off (a final "and", "um", a comma, an ellipsis), None when it cannot be told (no
    final punctuation, or nothing said). Pure: the session's adaptive endpoint uses it."""
    text = text.strip()
    if not text:
        return None
    if _FILLERS.search(text):
        return False
    words = re.findall(r"[a-z']+", text.lower())
    if not words:
        return None
    if text[-1] in "?!":
        return True
    if words[-1] in _CONTINUES:
        return False
    return True if text[-1] == "." else None


_BACKCHANNEL = frozenset((
    "mm", "mmm", "hmm", "mhm", "mm-hmm", "mmhmm", "uh-huh", "uh", "huh", "ah", "aha", "oh", "um", "yeah", "yep",
    "yes", "ok", "okay", "right", "sure", "alright", "cool", "nice", "wow", "i", "see",
))


def is_backchannel(text: str) -> bool:
    """True when a short utterance during a reply holds no words but listening noises ("mm-hmm", "yeah", "I see",
    a cough transcribed as nothing): the reply should go on."""
    words = re.findall(r"[a-z'-]+", text.lower())
    return all(word.strip("-'") in _BACKCHANNEL for word in words)

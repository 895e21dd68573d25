"""Sampling settings of the local model (llama.cpp's sampler chain), shared by settings, the registry and benchmarks.

The defaults were chosen from ``scripts/eval_models.py`` (see docs/models.md): a low temperature keeps short spoken
answers on topic, ``min_p`` cuts the long tail a small model wanders into, and the repetition penalties act on the
tokens generated in this reply only (llama-cpp-python does not feed the prompt to its penalty sampler), so they stop
loops inside a reply, not a reply that copies an earlier one. ``no_repeat_ngram`` is the lever for that: it forbids
any token that would complete a run of that many tokens already said in an earlier assistant reply of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Sampling:
    """How the next token is picked. ``temperature`` 0 is greedy (then only the penalties and ``no_repeat_ngram``
    matter)."""

    temperature: float = 0.3
    top_p: float = 0.9
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1  # divides the logit of a token already generated in the last ``repeat_last_n``
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0  # subtracted once per earlier occurrence in the window
    presence_penalty: float = 0.0  # subtracted once if the token occurred in the window
    no_repeat_ngram: int = 0  # 0: off; n: no run of n tokens copied from an earlier assistant reply

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError("temperature must be within [0, 2]")
        if not 0.0 < self.top_p <= 1.0 or not 0.0 <= self.min_p < 1.0:
            raise ValueError("top_p must be within (0, 1] and min_p within [0, 1)")
        if self.top_k < 0 or self.repeat_last_n < 0 or self.repeat_penalty <= 0:
            raise ValueError("top_k and repeat_last_n must be >= 0, repeat_penalty > 0")
        if self.no_repeat_ngram != 0 and self.no_repeat_ngram < 2:
            raise ValueError("no_repeat_ngram must be 0 (off) or >= 2")

    def with_temperature(self, temperature: float | None) -> Sampling:
        """These settings with a request's own temperature, when it sets one."""
        if temperature is None or temperature == self.temperature:
            return self
        return replace(self, temperature=temperature)


class NgramBlocker:
    """A llama-cpp-python logits processor that forbids copying an earlier reply word for word.

    Built from the token lists of the earlier assistant replies: whenever the last ``n - 1`` generated tokens also
    occur in one of them, the token that followed there gets ``-inf``, so no run of ``n`` tokens is copied. The prompt
    itself is not scanned (the model may quote the caller or the instructions). Cost: one dict look-up per token.
    """

    def __init__(self, replies: list[list[int]], n: int, prompt_length: int):
        self.n = n
        self.prompt_length = prompt_length
        self.follows: dict[tuple[int, ...], set[int]] = {}
        for reply in replies:
            for i in range(len(reply) - n + 1):
                self.follows.setdefault(tuple(reply[i:i + n - 1]), set()).add(reply[i + n - 1])
        self.blocked = 0  # tokens forbidden so far (the evaluation reports it)

    def __call__(self, input_ids, scores):  # numpy arrays: the ids so far and this step's logits (modified in place)
        generated = len(input_ids) - self.prompt_length
        if generated >= self.n - 1 and self.follows:
            banned = self.follows.get(tuple(int(t) for t in input_ids[-(self.n - 1):]))
            if banned:
                for token in banned:
                    scores[token] = -float("inf")
                self.blocked += 1
        return scores

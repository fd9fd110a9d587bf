"""GPT-1's task input transforms (Radford et al. 2018, Sec. 3.3, Figure 1): each supervised task
becomes one or more token sequences <s> ... $ ... <e> for the pre-trained model, whose final-block
features at the extract token <e> feed a linear output layer (Eq. 3).

Token sequences are lists of int ids; `pad_sequences` turns them into int32 [N, T] and the
extract positions [N]; `extract_features` returns [N, d_model].
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from jaxzoo.lm.gpt import GPT, GPTConfig

__all__ = ["TaskTokens", "classification_input", "entailment_input", "extract_features",
           "multiple_choice_inputs", "pad_sequences", "similarity_inputs"]


@dataclasses.dataclass(frozen=True)
class TaskTokens:
    """GPT-1's added special tokens: randomly initialised start <s>, delimiter $ and extract <e>
    (Radford et al. 2018, Sec. 3.3); their ids must be < the model's vocab_size."""

    start: int
    delim: int
    extract: int


def classification_input(text: Sequence[int], special: TaskTokens) -> list[int]:
    """Text classification: <s> text <e>."""
    return [special.start, *text, special.extract]


def entailment_input(premise: Sequence[int], hypothesis: Sequence[int], special: TaskTokens) -> list[int]:
    """Entailment: <s> premise $ hypothesis <e>."""
    return [special.start, *premise, special.delim, *hypothesis, special.extract]


def similarity_inputs(a: Sequence[int], b: Sequence[int], special: TaskTokens) -> tuple[list[int], list[int]]:
    """Similarity has no inherent order: both orders, <s> a $ b <e> and <s> b $ a <e>, each
    encoded independently; their extract features are added element-wise before the linear
    output layer."""
    return entailment_input(a, b, special), entailment_input(b, a, special)


def multiple_choice_inputs(context: Sequence[int], answers: Sequence[Sequence[int]],
                           special: TaskTokens) -> list[list[int]]:
    """Question answering / commonsense reasoning: one sequence <s> context $ answer_k <e> per
    answer, each encoded independently; the K scores are normalised with a softmax."""
    if not answers:
        raise ValueError("multiple_choice_inputs needs at least one answer")
    return [entailment_input(context, ans, special) for ans in answers]


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None):
    """Right-pads token lists into int32 [N, T] and returns (tokens, extract_index [N]), where
    extract_index is each sequence's last position (its <e> token). Right padding does not change
    the features at extract_index of a causal model."""
    longest = max(len(s) for s in seqs)
    length = length or longest
    if longest > length:
        raise ValueError(f"a sequence of {longest} tokens does not fit length={length}")
    tokens = np.full((len(seqs), length), pad_id, np.int32)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = s
    return jnp.asarray(tokens), jnp.asarray([len(s) - 1 for s in seqs], jnp.int32)


def extract_features(config: GPTConfig, params, tokens, extract_index):
    """Final-block features h_l^m at each row's extract token (GPT-1 Eq. 3's input): [N, d_model]."""
    h = GPT(config).apply(params, tokens, method=GPT.hidden_states)
    return jnp.take_along_axis(h, extract_index[:, None, None], axis=1)[:, 0]

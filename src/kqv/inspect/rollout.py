"""Attention rollout and attention flow: how much of each input token reaches each position at the top.

One layer's pattern says where a position reads from the layer below, not from the input: after a
few layers every position is a mixture of mixtures. Rollout (Abnar & Zuidema 2020, "Quantifying
Attention Flow in Transformers", §3) follows the mixing down to the tokens. Per layer l it
averages the heads, adds the identity for the residual connection (a position also keeps what it
had) and renormalises the rows,

    Â_l = (Ā_l + I) / row sums          (= ½·Ā_l + ½·I when the rows of Ā_l sum to 1)

and multiplies the layers, the lowest on the right:

    rollout after layer l = Â_l · Â_{l−1} ··· Â_0          (T, T)

Row q of the last one: what share of what position q holds at the top came from each input token.
Each row sums to 1. It counts attention only (the MLPs, the values and the norms are ignored), so it
says where information could have come from, not what the model did with it.

Attention flow, the paper's other measure, reads the same layered graph (nodes: positions per
layer; an edge from key j below to query i above with capacity Â_l[i, j]) as a flow network: the
flow from input j to top position q is the maximum flow between them. It is T² max-flow problems,
so it is for short inputs.
"""

from dataclasses import dataclass

import numpy as np
import torch

from kqv.errors import UserError
from kqv.inspect.prompt import evaluating, prompt_batch

FLOW_MAX_TOKENS = 64  # attention flow solves T² max-flow problems on an (L+1)·T-node graph
FLOW_SCALE = 2**20  # scipy's max flow wants integer capacities: weights are counted in units of 2⁻²⁰


@dataclass
class Rollout:
    layers: torch.Tensor  # (L, T, T): the rollout after each layer, layers[l] = Â_l ··· Â_0
    final: torch.Tensor  # (T, T): layers[-1]; row q: the share of each input token in position q at the top


def _head_average(patterns: torch.Tensor) -> torch.Tensor:
    """(L, nh, T, T) or (L, T, T) -> (L, T, T), checked to be square."""
    if patterns.dim() == 4:
        patterns = patterns.mean(dim=1)  # (L, nh, T, T) -> (L, T, T)
    if patterns.dim() != 3:
        raise UserError(
            f"attention patterns must be (layers, heads, T, T) or (layers, T, T), got shape {tuple(patterns.shape)}"
        )
    if patterns.shape[-1] != patterns.shape[-2]:
        raise UserError(
            f"rollout needs self-attention patterns whose keys are the queries (T × T), got "
            f"{patterns.shape[-2]} × {patterns.shape[-1]}; run the whole text without a KV cache"
        )
    return patterns


def mixing_matrices(patterns: torch.Tensor, residual: bool = True) -> torch.Tensor:
    """Each layer's Â_l (L, T, T): the head average, with the identity added and rows renormalised (residual).

    Without `residual` it is the plain head average Ā_l. A query that sees no key has a zero row in Ā_l;
    with the residual it keeps only itself (Â_l row = e_q), without it stays zero.
    """
    mean = _head_average(patterns)  # (L, T, T)
    if not residual:
        return mean
    eye = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device)  # (T, T)
    mixed = mean + eye  # (L, T, T)
    return mixed / mixed.sum(dim=-1, keepdim=True)  # row sums ≥ 1 (the diagonal), so never 0


def attention_rollout(patterns: torch.Tensor, residual: bool = True) -> torch.Tensor:
    """patterns (L, nh, T, T) or head-averaged (L, T, T) -> the rollout after each layer (L, T, T).

    out[l] = Â_l · Â_{l−1} ··· Â_0; out[-1] is the rollout of the whole model. `residual=False`
    multiplies the plain head averages Ā_l (no identity, no renormalising).
    """
    mixing = mixing_matrices(patterns, residual)  # (L, T, T)
    out = torch.empty_like(mixing)  # (L, T, T)
    out[0] = mixing[0]
    for layer in range(1, mixing.shape[0]):
        out[layer] = mixing[layer] @ out[layer - 1]  # (T, T) @ (T, T): one more layer on top
    return out


def attention_flow(patterns: torch.Tensor, residual: bool = True) -> torch.Tensor:
    """patterns (L, nh, T, T) or (L, T, T) -> flow (T, T): flow[q, j], the maximum flow from input token j
    to position q at the top through the layers' Â (capacities; see the module docstring). T ≤ 64.

    Capacities are rounded to multiples of 2⁻²⁰ (scipy's max flow counts in integers), so a flow is
    exact to about L·T·2⁻²¹.
    """
    from scipy.sparse import csr_matrix  # here, not at the top: scipy costs 0.2 s to import, and only flow needs it
    from scipy.sparse.csgraph import maximum_flow

    mixing = mixing_matrices(patterns, residual).double().cpu().numpy()  # (L, T, T)
    L, T, _ = mixing.shape
    if T > FLOW_MAX_TOKENS:
        raise UserError(f"attention flow solves T² max-flow problems; T={T} is over {FLOW_MAX_TOKENS}, use rollout")
    # node l·T + i is position i below layer l (l = 0: the input tokens, l = L: the top)
    rows, cols, capacity = [], [], []
    for layer in range(L):
        query, key = np.nonzero(mixing[layer] > 0)  # edges key j (below) -> query i (above)
        rows.append(layer * T + key)
        cols.append((layer + 1) * T + query)
        capacity.append(np.rint(mixing[layer][query, key] * FLOW_SCALE))
    n_nodes = (L + 1) * T
    capacities, rows, cols = np.concatenate(capacity).astype(np.int32), np.concatenate(rows), np.concatenate(cols)
    kept = capacities > 0  # a weight under 2⁻²¹ rounds to no edge
    graph = csr_matrix((capacities[kept], (rows[kept], cols[kept])), shape=(n_nodes, n_nodes))
    flow = np.zeros((T, T))  # (T, T)
    for query in range(T):
        for token in range(T):
            flow[query, token] = maximum_flow(graph, token, L * T + query).flow_value / FLOW_SCALE
    return torch.from_numpy(flow).to(dtype=patterns.dtype, device=patterns.device)


def model_patterns(model, ids) -> torch.Tensor:
    """Every layer's attention pattern of one input (L, nh, T, T), in eval mode without gradients."""
    idx = prompt_batch(model, ids)  # (1, T)
    with evaluating(model), torch.no_grad():
        patterns = model(idx, need_patterns=True).patterns  # L × (1, nh, T, T)
    return torch.stack([p[0] for p in patterns])  # (L, nh, T, T)


def rollout(model, ids, residual: bool = True) -> Rollout:
    """The attention rollout of a GPT on one input: token ids, a list or a (T,) / (1, T) LongTensor."""
    layers = attention_rollout(model_patterns(model, ids), residual)  # (L, T, T)
    return Rollout(layers=layers, final=layers[-1])

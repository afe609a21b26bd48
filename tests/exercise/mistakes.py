"""The mistakes learners really make, each written as the edits that turn an exercise's reference into it.

`Mistake.text()` applies the edits to kqv's reference file of the exercise (each edited passage must occur
exactly once in it, so a reference that changes under a mistake fails loudly instead of drifting), and
`Mistake.write(folder)` writes the learner's file. `check` and `hint` say where the checker must catch it
and words of the hint it must give (tests/exercise/test_every_exercise.py).
"""

from dataclasses import dataclass
from pathlib import Path

from kqv.exercise import registry


@dataclass(frozen=True)
class Mistake:
    exercise: str
    name: str
    check: str  # the check that must catch it
    hint: str  # words of the hint that check must give
    what: str  # the mistake, in a few words
    edits: tuple[tuple[str, str], ...]  # (a passage of the reference, what the learner wrote instead)

    def text(self) -> str:
        text = registry.exercise(self.exercise).reference()
        for old, new in self.edits:
            assert text.count(old) == 1, f"{self.exercise}/{self.name}: an edit no longer matches the reference once"
            text = text.replace(old, new)
        return text

    def write(self, folder: Path) -> Path:
        path = folder / f"{self.name}.py"
        path.write_text(self.text(), encoding="utf-8")
        return path


def mistake(exercise: str, name: str) -> Mistake:
    return next(m for m in MISTAKES if m.exercise == exercise and m.name == name)


MISTAKES = [
    Mistake(
        "backprop",
        "bias_not_summed",
        "shapes",
        "one row per sample",
        "nabla_b keeps the batch's rows",
        (
            (
                "            nabla_b[l - 1] = delta.sum(axis=0)  # (n_l,)\n",
                "            nabla_b[l - 1] = delta  # (n_l,)\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "biases_not_updated",
        "update",
        "the biases did not move",
        "only the weights are updated",
        (("        self.biases = [b - step * nb for b, nb in zip(self.biases, nabla_b)]\n", ""),),
    ),
    Mistake(
        "backprop",
        "cross_entropy_delta",
        "values",
        "cross-entropy cost's delta",
        "δ_L = a_L − y, without σ'(z_L)",
        (
            (
                "        delta = (activations[-1] - y) * sigmoid_prime(zs[-1])  # δ_L: (B, n_L)\n",
                "        delta = activations[-1] - y  # δ_L: (B, n_L)\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "divided_by_len_batch",
        "update",
        "len(batch) is 2",
        "Nielsen's eta / len(mini_batch) on the pair (x, y)",
        (("        step = eta / len(x)  # η / B\n", "        step = eta / len(batch)\n"),),
    ),
    Mistake(
        "backprop",
        "dw_transposed",
        "shapes",
        "transpose of the expected one",
        "the weight gradient as a_{l-1}ᵀ @ δ_l",
        (
            (
                "            nabla_w[l - 1] = delta.T @ activations[l - 1]  # (n_l, B) @ (B, n_{l-1}) -> (n_l, n_{l-1})\n",
                "            nabla_w[l - 1] = activations[l - 1].T @ delta  # (n_l, B) @ (B, n_{l-1}) -> (n_l, n_{l-1})\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "eta_twice",
        "update",
        "η is applied twice",
        "η multiplied in twice",
        (
            (
                "        self.weights = [w - step * nw for w, nw in zip(self.weights, nabla_w)]\n        self.biases = [b - step * nb for b, nb in zip(self.biases, nabla_b)]\n",
                "        self.weights = [w - eta * step * nw for w, nw in zip(self.weights, nabla_w)]\n        self.biases = [b - eta * step * nb for b, nb in zip(self.biases, nabla_b)]\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "gradient_ascent",
        "update",
        "goes uphill",
        "the gradient added instead of subtracted",
        (
            (
                "        self.weights = [w - step * nw for w, nw in zip(self.weights, nabla_w)]\n        self.biases = [b - step * nb for b, nb in zip(self.biases, nabla_b)]\n",
                "        self.weights = [w + step * nw for w, nw in zip(self.weights, nabla_w)]\n        self.biases = [b + step * nb for b, nb in zip(self.biases, nabla_b)]\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "mean_gradients",
        "values",
        "batch's means",
        "backprop returns means, not sums",
        (
            (
                "        delta = (activations[-1] - y) * sigmoid_prime(zs[-1])  # δ_L: (B, n_L)\n",
                "        delta = (activations[-1] - y) * sigmoid_prime(zs[-1]) / len(x)  # δ_L: (B, n_L)\n",
            ),
            ("        step = eta / len(x)  # η / B\n", "        step = eta  # backprop already averages\n"),
        ),
    ),
    Mistake(
        "backprop",
        "not_divided",
        "update",
        "B = 5 times too big",
        "the update not divided by the batch size",
        (("        step = eta / len(x)  # η / B\n", "        step = eta\n"),),
    ),
    Mistake(
        "backprop",
        "off_by_one_layer",
        "shapes",
        "the wrong layer's W",
        "δ sent back with W_l instead of W_{l+1}",
        (
            (
                "                delta = (delta @ self.weights[l - 1]) * sigmoid_prime(zs[l - 2])  # δ_{l-1}: (B, n_{l-1})\n",
                "                delta = (delta @ self.weights[l - 2]) * sigmoid_prime(zs[l - 2])  # δ_{l-1}: (B, n_{l-1})\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "prime_of_activation",
        "values",
        "σ'(a)",
        "sigmoid_prime(a) instead of sigmoid_prime(z)",
        (
            (
                "        delta = (activations[-1] - y) * sigmoid_prime(zs[-1])  # δ_L: (B, n_L)\n",
                "        delta = (activations[-1] - y) * sigmoid_prime(activations[-1])  # δ_L: (B, n_L)\n",
            ),
            (
                "                delta = (delta @ self.weights[l - 1]) * sigmoid_prime(zs[l - 2])  # δ_{l-1}: (B, n_{l-1})\n",
                "                delta = (delta @ self.weights[l - 1]) * sigmoid_prime(activations[l - 1])  # δ_{l-1}: (B, n_{l-1})\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "returns_new_parameters",
        "update",
        "instead of returning them",
        "update_mini_batch returns the new lists",
        (
            (
                "        self.weights = [w - step * nw for w, nw in zip(self.weights, nabla_w)]\n        self.biases = [b - step * nb for b, nb in zip(self.biases, nabla_b)]\n",
                "        weights = [w - step * nw for w, nw in zip(self.weights, nabla_w)]\n        biases = [b - step * nb for b, nb in zip(self.biases, nabla_b)]\n        return weights, biases\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "sigma_hidden",
        "values",
        "σ(z) where σ'(z) is needed",
        "σ(z) instead of σ'(z) in the hidden layers' δ",
        (
            (
                "                delta = (delta @ self.weights[l - 1]) * sigmoid_prime(zs[l - 2])  # δ_{l-1}: (B, n_{l-1})\n",
                "                delta = (delta @ self.weights[l - 1]) * sigmoid(zs[l - 2])  # δ_{l-1}: (B, n_{l-1})\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "sigma_output",
        "values",
        "δ_L uses σ(z_L) where σ'(z_L) is needed",
        "σ(z_L) instead of σ'(z_L) in δ_L",
        (
            (
                "        delta = (activations[-1] - y) * sigmoid_prime(zs[-1])  # δ_L: (B, n_L)\n",
                "        delta = (activations[-1] - y) * sigmoid(zs[-1])  # δ_L: (B, n_L)\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "sign_flipped",
        "values",
        "opposite sign",
        "the cost's derivative as y − a_L",
        (
            (
                "        delta = (activations[-1] - y) * sigmoid_prime(zs[-1])  # δ_L: (B, n_L)\n",
                "        delta = (y - activations[-1]) * sigmoid_prime(zs[-1])  # δ_L: (B, n_L)\n",
            ),
        ),
    ),
    Mistake(
        "backprop",
        "swapped_order",
        "shapes",
        "biases first",
        "returns (nabla_w, nabla_b)",
        (("        return nabla_b, nabla_w\n", "        return nabla_w, nabla_b\n"),),
    ),
    Mistake(
        "backprop",
        "w_not_transposed",
        "shapes",
        "W instead of Wᵀ",
        "δ sent back with W_{l+1}ᵀ (rows are samples)",
        (
            (
                "                delta = (delta @ self.weights[l - 1]) * sigmoid_prime(zs[l - 2])  # δ_{l-1}: (B, n_{l-1})\n",
                "                delta = (delta @ self.weights[l - 1].T) * sigmoid_prime(zs[l - 2])  # δ_{l-1}: (B, n_{l-1})\n",
            ),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "epsilon_in_log",
        "huge logits",
        "the loss is capped",
        "cross_entropy takes np.log(softmax(z) + 1e-12)",
        (
            (
                "    shifted = z - z.max(axis=-1, keepdims=True)  # (B, K), each row's max is 0\n    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # log softmax(z), (B, K)\n",
                "    log_probs = np.log(softmax(z) + 1e-12)\n",
            ),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "global_max",
        "huge logits",
        "not of each row",
        "softmax subtracts the max of the whole array",
        (
            (
                "    e = np.exp(z - z.max(axis=-1, keepdims=True))  # (B, K), every entry in (0, 1]\n",
                "    e = np.exp(z - z.max())\n",
            ),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "gradient_not_divided",
        "finite differences",
        "divide the gradient by B",
        "the loss is a mean but its gradient is not divided by B",
        (("    return grad / len(z)\n", "    return grad\n"),),
    ),
    Mistake(
        "softmax-cross-entropy",
        "gradient_sign",
        "gradient",
        "opposite sign",
        "the gradient is (one-hot − softmax) / B",
        (("    return grad / len(z)\n", "    return -grad / len(z)\n"),),
    ),
    Mistake(
        "softmax-cross-entropy",
        "loss_of_predicted_class",
        "loss values",
        "predicted class",
        "cross_entropy takes the row's largest probability",
        (
            (
                "    return float(-log_probs[np.arange(len(z)), labels].mean())\n",
                "    return float(-log_probs.max(axis=-1).mean())\n",
            ),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "loss_per_row",
        "shapes",
        "one number",
        "cross_entropy returns one loss per row",
        (
            (
                "    return float(-log_probs[np.arange(len(z)), labels].mean())\n",
                "    return -log_probs[np.arange(len(z)), labels]\n",
            ),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "loss_sign",
        "loss values",
        "opposite sign",
        "cross_entropy is +log p",
        (
            (
                "    return float(-log_probs[np.arange(len(z)), labels].mean())\n",
                "    return float(log_probs[np.arange(len(z)), labels].mean())\n",
            ),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "loss_sum_gradient_mean",
        "finite differences",
        "does cross_entropy sum",
        "cross_entropy sums, its gradient averages",
        (
            (
                "    return float(-log_probs[np.arange(len(z)), labels].mean())\n",
                "    return float(-log_probs[np.arange(len(z)), labels].sum())\n",
            ),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "missing_one_hot",
        "gradient",
        "one-hot is missing",
        "the gradient is softmax(z) / B",
        (("    grad[np.arange(len(z)), labels] -= 1.0  # softmax − one-hot\n", ""),),
    ),
    Mistake(
        "softmax-cross-entropy",
        "mutates_input",
        "softmax values",
        "changes the caller's logits",
        "softmax subtracts the max from z in place",
        (
            (
                "    e = np.exp(z - z.max(axis=-1, keepdims=True))  # (B, K), every entry in (0, 1]\n",
                "    z -= z.max(axis=-1, keepdims=True)\n    e = np.exp(z)\n",
            ),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "naive_log",
        "huge logits",
        "log 0",
        "cross_entropy takes np.log(softmax(z))",
        (
            (
                "    shifted = z - z.max(axis=-1, keepdims=True)  # (B, K), each row's max is 0\n    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # log softmax(z), (B, K)\n",
                "    log_probs = np.log(softmax(z))\n",
            ),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "no_max_subtraction",
        "huge logits",
        "overflows to inf",
        "softmax exponentiates the raw logits",
        (
            (
                "    e = np.exp(z - z.max(axis=-1, keepdims=True))  # (B, K), every entry in (0, 1]\n",
                "    e = np.exp(z)\n",
            ),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "sum_not_mean",
        "batch mean",
        "sums over the batch",
        "cross_entropy and its gradient are sums over the batch",
        (
            (
                "    return float(-log_probs[np.arange(len(z)), labels].mean())\n",
                "    return float(-log_probs[np.arange(len(z)), labels].sum())\n",
            ),
            ("    return grad / len(z)\n", "    return grad\n"),
        ),
    ),
    Mistake(
        "softmax-cross-entropy",
        "wrong_axis",
        "rows sum to 1",
        "wrong axis",
        "softmax normalises the columns",
        (
            (
                "    e = np.exp(z - z.max(axis=-1, keepdims=True))  # (B, K), every entry in (0, 1]\n    return e / e.sum(axis=-1, keepdims=True)\n",
                "    e = np.exp(z - z.max(axis=0, keepdims=True))\n    return e / e.sum(axis=0, keepdims=True)\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "d_k_from_axis_1",
        "values",
        "q's axis 1",
        "d_k read from q.shape[1], right only without batch axes",
        (("    d_k = q.shape[-1]\n", "    d_k = q.shape[1]\n"),),
    ),
    Mistake(
        "attention",
        "k_dot_T",
        "values",
        "it works on one (Tq, d_k) input but not on batched",
        "k.T, which reverses every axis",
        (
            (
                "    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (…, Tq, Tk)\n",
                "    scores = q @ k.T / math.sqrt(d_k)\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "k_not_transposed",
        "shapes",
        "K is not transposed",
        "Q·K instead of Q·Kᵀ",
        (
            (
                "    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (…, Tq, Tk)\n",
                "    scores = q @ k / math.sqrt(d_k)\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "mask_after_softmax",
        "mask",
        "the mask is applied after the softmax",
        "masks the weights, not the scores",
        (
            (
                "    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (…, Tq, Tk)\n",
                "    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (…, Tq, Tk)\n    weights = torch.softmax(scores, dim=-1)  # over the keys: each row sums to 1\n",
            ),
            (
                '        scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys: −∞, so exactly 0 after the softmax\n    weights = torch.softmax(scores, dim=-1)  # over the keys: each row sums to 1\n',
                "        weights = weights.masked_fill(~mask, 0.0)\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "mask_finite",
        "mask",
        "a finite value (like −1e4), not −∞",
        "hides with −1e4, not −∞",
        (
            (
                '        scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys: −∞, so exactly 0 after the softmax\n',
                "        scores = scores.masked_fill(~mask, -1e4)\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "mask_inverted",
        "mask",
        "the mask is inverted",
        "hides the keys that may be seen",
        (
            (
                '        scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys: −∞, so exactly 0 after the softmax\n',
                '        scores = scores.masked_fill(mask, float("-inf"))\n',
            ),
        ),
    ),
    Mistake(
        "attention",
        "mask_none_unhandled",
        "shapes",
        "with mask=None",
        "masks even when mask is None",
        (
            (
                '    if mask is not None:\n        scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys: −∞, so exactly 0 after the softmax\n',
                '    scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys: −∞, so exactly 0 after the softmax\n',
            ),
        ),
    ),
    Mistake(
        "attention",
        "mask_zero",
        "mask",
        "the hidden scores were set to 0, not −∞",
        "hides with 0, not −∞",
        (
            (
                '        scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys: −∞, so exactly 0 after the softmax\n',
                "        scores = scores.masked_fill(~mask, 0.0)\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "no_scaling",
        "values",
        "the scores are not divided by √d_k",
        "the scores are not divided by √d_k",
        (
            ("\nimport math\n", ""),
            (
                "    d_k = q.shape[-1]\n    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (…, Tq, Tk)\n",
                "    scores = q @ k.transpose(-2, -1)  # (…, Tq, Tk)\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "q_scaled_in_place",
        "values",
        "divides the caller's q in place",
        "q /= √d_k changes the caller's tensor",
        (
            (
                "    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (…, Tq, Tk)\n",
                "    q /= math.sqrt(d_k)\n    scores = q @ k.transpose(-2, -1)  # (…, Tq, Tk)\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "scores_transposed",
        "shapes",
        "the scores are K·Qᵀ",
        "K·Qᵀ instead of Q·Kᵀ",
        (
            (
                "    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (…, Tq, Tk)\n",
                "    scores = k @ q.transpose(-2, -1) / math.sqrt(d_k)\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "softmax_over_queries",
        "rows sum to 1",
        "the softmax runs over the queries (dim −2)",
        "softmax over dim −2",
        (
            (
                "    weights = torch.softmax(scores, dim=-1)  # over the keys: each row sums to 1\n",
                "    weights = torch.softmax(scores, dim=-2)\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "weights_detached",
        "gradient",
        "no gradient reaches q and k",
        "the weights are detached from the graph",
        (
            (
                "    weights = torch.softmax(scores, dim=-1)  # over the keys: each row sums to 1\n",
                "    weights = torch.softmax(scores, dim=-1).detach()\n",
            ),
        ),
    ),
    Mistake(
        "attention",
        "weights_v_wrong_order",
        "shapes",
        "the output is V·weights",
        "V·weights instead of weights·V",
        (("    return weights @ v, weights  # (…, Tq, d_v), (…, Tq, Tk)\n", "    return v @ weights, weights\n"),),
    ),
    Mistake(
        "causal-mask",
        "additive_mask",
        "shape and dtype",
        "an additive mask (0 where seen, −∞ where hidden)",
        "the additive form",
        (
            (
                "    return torch.ones(T, T, dtype=torch.bool).tril()  # j ≤ i: the lower-left triangle and the diagonal\n",
                '    seen = torch.ones(T, T, dtype=torch.bool).tril()\n    return torch.zeros(T, T).masked_fill(~seen, float("-inf"))\n',
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "additive_mixed_up",
        "shape and dtype",
        "conventions mixed up",
        "−∞ where seen, 0 where hidden",
        (
            (
                "    return torch.ones(T, T, dtype=torch.bool).tril()  # j ≤ i: the lower-left triangle and the diagonal\n",
                '    seen = torch.ones(T, T, dtype=torch.bool).tril()\n    return torch.zeros(T, T).masked_fill(seen, float("-inf"))\n',
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "anticausal_hides_diagonal",
        "anticausal",
        "the mask hides the diagonal",
        "triu(diagonal=1): j > i",
        (
            (
                "    return torch.ones(T, T, dtype=torch.bool).triu()  # j ≥ i: the upper-right triangle and the diagonal\n",
                "    return torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "cache_new_keys_only",
        "after a cache",
        "only the new keys",
        "forgets the cached keys",
        (
            (
                "    query_positions = torch.arange(n_cached, n_cached + T_new)  # (T_new,)\n    key_positions = torch.arange(n_cached + T_new)  # (n_cached + T_new,)\n    return key_positions[None, :] <= query_positions[:, None]  # (T_new, n_cached + T_new)\n",
                "    return causal_mask(T_new)\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "cache_top_left",
        "after a cache",
        "the triangle starts in the top-left corner",
        "tril without the cache offset",
        (
            (
                "    query_positions = torch.arange(n_cached, n_cached + T_new)  # (T_new,)\n    key_positions = torch.arange(n_cached + T_new)  # (n_cached + T_new,)\n    return key_positions[None, :] <= query_positions[:, None]  # (T_new, n_cached + T_new)\n",
                "    return torch.ones(T_new, n_cached + T_new, dtype=torch.bool).tril()\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "cache_transposed",
        "after a cache",
        "the mask is keys × queries",
        "(Tk, T_new): keys as rows",
        (
            (
                "    return key_positions[None, :] <= query_positions[:, None]  # (T_new, n_cached + T_new)\n",
                "    return key_positions[:, None] <= query_positions[None, :]\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "diagonal_hidden",
        "diagonal",
        "the mask hides the diagonal: a token must see itself",
        "tril(diagonal=-1): j < i",
        (
            (
                "    return torch.ones(T, T, dtype=torch.bool).tril()  # j ≤ i: the lower-left triangle and the diagonal\n",
                "    return torch.ones(T, T, dtype=torch.bool).tril(diagonal=-1)\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "float_mask",
        "shape and dtype",
        "a float mask of 0s and 1s",
        "a float 0/1 mask",
        (
            (
                "    return torch.ones(T, T, dtype=torch.bool).tril()  # j ≤ i: the lower-left triangle and the diagonal\n",
                "    return torch.tril(torch.ones(T, T))\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "int_mask",
        "shape and dtype",
        "the mask holds integers",
        "an integer 0/1 mask",
        (
            (
                "    return torch.ones(T, T, dtype=torch.bool).tril()  # j ≤ i: the lower-left triangle and the diagonal\n",
                "    return torch.tril(torch.ones(T, T, dtype=torch.long))\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "off_by_one",
        "values",
        "off by one: each token sees one future token",
        "tril(diagonal=1): j ≤ i + 1",
        (
            (
                "    return torch.ones(T, T, dtype=torch.bool).tril()  # j ≤ i: the lower-left triangle and the diagonal\n",
                "    return torch.ones(T, T, dtype=torch.bool).tril(diagonal=1)\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "sees_future_all",
        "sees the future",
        "one future key is enough to leak",
        "all() instead of any()",
        (
            (
                "    return bool(mask.triu(diagonal=1).any())  # above the diagonal: key j > query i\n",
                "    future = torch.ones_like(mask).triu(diagonal=1)\n    return bool(mask[future].all())\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "sees_future_counts_diagonal",
        "sees the future",
        "the diagonal is not the future",
        "counts j = i as the future",
        (
            (
                "    return bool(mask.triu(diagonal=1).any())  # above the diagonal: key j > query i\n",
                "    return bool(mask.triu().any())\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "sees_future_looks_at_past",
        "sees the future",
        "that looks at the past",
        "looks below the diagonal",
        (
            (
                "    return bool(mask.triu(diagonal=1).any())  # above the diagonal: key j > query i\n",
                "    return bool(mask.tril(diagonal=-1).any())\n",
            ),
        ),
    ),
    Mistake(
        "causal-mask",
        "upper_triangle",
        "values",
        "this is the upper triangle",
        "triu: each token sees the future (anticausal)",
        (
            (
                "    return torch.ones(T, T, dtype=torch.bool).tril()  # j ≤ i: the lower-left triangle and the diagonal\n",
                "    return torch.ones(T, T, dtype=torch.bool).triu()\n",
            ),
        ),
    ),
    Mistake(
        "positional-encoding",
        "every_column_its_frequency",
        "known value",
        "every column has its own frequency",
        "exponent j/d_model for column j",
        (
            (
                "    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model / 2,): 0, 2, 4, …\n    angle = positions / 10000 ** (two_i / d_model)  # (max_len, d_model / 2): pos · ω_i\n",
                "    j = torch.arange(d_model, dtype=torch.float64)  # every column\n    angle = positions / 10000 ** (j / d_model)  # (max_len, d_model)\n",
            ),
            (
                "    table[:, 0::2] = torch.sin(angle)  # even columns\n    table[:, 1::2] = torch.cos(angle)  # odd columns\n",
                "    table[:, 0::2] = torch.sin(angle[:, 0::2])\n    table[:, 1::2] = torch.cos(angle[:, 1::2])\n",
            ),
        ),
    ),
    Mistake(
        "positional-encoding",
        "exponent_i",
        "known value",
        "the exponent is i/d_model",
        "i/d_model instead of 2i/d_model",
        (
            (
                "    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model / 2,): 0, 2, 4, …\n    angle = positions / 10000 ** (two_i / d_model)  # (max_len, d_model / 2): pos · ω_i\n",
                "    i = torch.arange(d_model // 2, dtype=torch.float64)  # 0, 1, 2, …\n    angle = positions / 10000 ** (i / d_model)\n",
            ),
        ),
    ),
    Mistake(
        "positional-encoding",
        "halves",
        "first row",
        "concatenated in halves",
        "[sin … sin, cos … cos] instead of interleaved",
        (
            (
                "    table = torch.empty(max_len, d_model, dtype=torch.float64)\n    table[:, 0::2] = torch.sin(angle)  # even columns\n    table[:, 1::2] = torch.cos(angle)  # odd columns\n",
                "    table = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)\n",
            ),
        ),
    ),
    Mistake(
        "positional-encoding",
        "integer_division",
        "known value",
        "every pair has frequency 1",
        "2i // d_model, always 0",
        (
            (
                "    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model / 2,): 0, 2, 4, …\n    angle = positions / 10000 ** (two_i / d_model)  # (max_len, d_model / 2): pos · ω_i\n",
                "    two_i = torch.arange(0, d_model, 2)  # integers\n    angle = positions / 10000 ** (two_i // d_model)\n",
            ),
        ),
    ),
    Mistake(
        "positional-encoding",
        "inverted",
        "known value",
        "the frequencies are inverted",
        "pos · 10000^(2i/d) instead of pos / 10000^(2i/d)",
        (
            (
                "    angle = positions / 10000 ** (two_i / d_model)  # (max_len, d_model / 2): pos · ω_i\n",
                "    angle = positions * 10000 ** (two_i / d_model)\n",
            ),
        ),
    ),
    Mistake(
        "positional-encoding",
        "positions_from_1",
        "first row",
        "the first row is position 1",
        "positions 1 … max_len",
        (
            (
                "    positions = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)\n",
                "    positions = torch.arange(1, max_len + 1, dtype=torch.float64)[:, None]\n",
            ),
        ),
    ),
    Mistake(
        "positional-encoding",
        "rotation_backwards",
        "relative position",
        "the matrix turns the wrong way",
        "[cos, −sin; sin, cos]: a shift by −k",
        (
            (
                "    rotation = torch.stack([torch.stack([cos, sin], dim=-1), torch.stack([-sin, cos], dim=-1)], dim=-2)\n",
                "    rotation = torch.stack([torch.stack([cos, -sin], dim=-1), torch.stack([sin, cos], dim=-1)], dim=-2)\n",
            ),
        ),
    ),
    Mistake(
        "positional-encoding",
        "rotation_without_k",
        "relative position",
        "the angle is ω_i, a shift by one position",
        "forgets k",
        (
            (
                "    b = k / 10000 ** (two_i / d_model)  # (d_model / 2,): the angle k · ω_i\n",
                "    b = 1 / 10000 ** (two_i / d_model)\n",
            ),
        ),
    ),
    Mistake(
        "positional-encoding",
        "sin_cos_swapped",
        "first row",
        "sin and cos are swapped",
        "cos in the even columns, sin in the odd",
        (
            (
                "    table[:, 0::2] = torch.sin(angle)  # even columns\n    table[:, 1::2] = torch.cos(angle)  # odd columns\n",
                "    table[:, 0::2] = torch.cos(angle)\n    table[:, 1::2] = torch.sin(angle)\n",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "causal_ignored",
        "causal",
        "every position sees every other",
        "never masks",
        (
            (
                '    if causal:\n        seen = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # j ≤ i\n        scores = scores.masked_fill(~seen, float("-inf"))\n',
                "",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "head_width_swapped",
        "split shapes",
        "nh and hs are swapped",
        "hs heads of nh features",
        (
            (
                "    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, T, nh, hs) -> (B, nh, T, hs)\n",
                "    return x.view(B, T, C // n_head, n_head).transpose(1, 2)\n",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "heads_strided",
        "split values",
        "head h takes the features h, h + nh, h + 2·nh",
        "head h takes every nh-th feature",
        (
            (
                "    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, T, nh, hs) -> (B, nh, T, hs)\n",
                "    return x.view(B, T, C // n_head, n_head).permute(0, 3, 1, 2)\n",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "merge_view_not_contiguous",
        "merge",
        "call .contiguous() before .view",
        ".view after a transpose",
        (
            (
                "    return x.transpose(1, 2).reshape(B, T, n_head * hs)  # (B, T, nh, hs) -> (B, T, C)\n",
                "    return x.transpose(1, 2).view(B, T, n_head * hs)\n",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "merge_without_transpose",
        "merge",
        "the transpose is missing",
        "reshape without the transpose",
        (
            (
                "    return x.transpose(1, 2).reshape(B, T, n_head * hs)  # (B, T, nh, hs) -> (B, T, C)\n",
                "    return x.reshape(B, T, n_head * hs)\n",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "no_output_projection",
        "values",
        "the output projection is missing",
        "forgets w_o",
        (
            (
                "    return merge_heads(weights @ v) @ w_o.T  # (B, nh, T, hs) -> (B, T, C) -> (B, T, C)\n",
                "    return merge_heads(weights @ v)\n",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "q_k_swapped",
        "values",
        "q and k are swapped",
        "takes W_K as W_Q",
        (
            (
                "    w_q, w_k, w_v = w_qkv.split(C, dim=0)  # (C, C) each: the row blocks of w_qkv\n",
                "    w_k, w_q, w_v = w_qkv.split(C, dim=0)\n",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "scale_by_sqrt_C",
        "values",
        "divided by √C",
        "√C instead of √hs",
        (
            (
                "    scores = q @ k.transpose(-2, -1) / math.sqrt(C // n_head)  # (B, nh, T, T)\n",
                "    scores = q @ k.transpose(-2, -1) / math.sqrt(C)\n",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "split_without_transpose",
        "split values",
        "view(B, nh, T, hs)",
        "view(B, nh, T, hs): mixes positions",
        (
            (
                "    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, T, nh, hs) -> (B, nh, T, hs)\n",
                "    return x.view(B, n_head, T, C // n_head)\n",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "weights_detached",
        "gradient",
        "no gradient reaches w_qkv",
        "w_qkv.data: no gradient for the weights",
        (
            (
                "    w_q, w_k, w_v = w_qkv.split(C, dim=0)  # (C, C) each: the row blocks of w_qkv\n",
                "    w_q, w_k, w_v = w_qkv.data.split(C, dim=0)\n",
            ),
        ),
    ),
    Mistake(
        "multi-head",
        "weights_untransposed",
        "values",
        "the weights are used untransposed, x @ W;",
        "x @ W instead of x @ W.T",
        (
            (
                "    q = split_heads(x @ w_q.T, n_head)  # (B, nh, T, hs)\n    k = split_heads(x @ w_k.T, n_head)\n    v = split_heads(x @ w_v.T, n_head)\n",
                "    q = split_heads(x @ w_q, n_head)\n    k = split_heads(x @ w_k, n_head)\n    v = split_heads(x @ w_v, n_head)\n",
            ),
            (
                "    return merge_heads(weights @ v) @ w_o.T  # (B, nh, T, hs) -> (B, T, C) -> (B, T, C)\n",
                "    return merge_heads(weights @ v) @ w_o\n",
            ),
        ),
    ),
    Mistake(
        "kv-cache",
        "attends_without_itself",
        "first step",
        "does not attend to itself",
        "the query attends over the past rows only",
        (
            (
                '        weights = torch.softmax(q @ k.T / math.sqrt(D), dim=-1)  # (1, T_past + 1): nothing to mask\n        x = x + weights @ v @ layer["W_o"]  # (1, D)\n',
                '        weights = torch.softmax(q @ k_past.T / math.sqrt(D), dim=-1)  # (1, T_past)\n        x = x + weights @ v_past @ layer["W_o"]  # (1, D)\n',
            ),
        ),
    ),
    Mistake(
        "kv-cache",
        "cache_holds_inputs",
        "cache contents",
        "the layer's input",
        "the cache keeps h and projects it again each step",
        (
            (
                "        k_past, v_past = cache[i]  # (T_past, D) each\n",
                "        h_past, _ = cache[i]  # (T_past, D): earlier inputs\n",
            ),
            (
                '        k = torch.cat([k_past, h @ layer["W_k"]])  # (T_past + 1, D): the past rows, then this token\'s\n        v = torch.cat([v_past, h @ layer["W_v"]])  # (T_past + 1, D)\n        new_cache.append((k, v))\n',
                '        hs = torch.cat([h_past, h])  # (T_past + 1, D)\n        k, v = hs @ layer["W_k"], hs @ layer["W_v"]  # (T_past + 1, D) each\n        new_cache.append((hs, hs))\n',
            ),
        ),
    ),
    Mistake(
        "kv-cache",
        "cache_holds_v_k",
        "cache contents",
        "holds (v, k)",
        "each pair stored as (v, k), and read back that way",
        (
            (
                "        k_past, v_past = cache[i]  # (T_past, D) each\n",
                "        v_past, k_past = cache[i]  # (T_past, D) each\n",
            ),
            ("        new_cache.append((k, v))\n", "        new_cache.append((v, k))\n"),
        ),
    ),
    Mistake(
        "kv-cache",
        "changes_given_cache",
        "cache left as given",
        "build a new list",
        "the given list updated in place and returned",
        (
            ("    new_cache = []\n", ""),
            ("        new_cache.append((k, v))\n", "        cache[i] = (k, v)  # the cache, updated\n"),
            ("    return logits[0], new_cache\n", "    return logits[0], cache\n"),
        ),
    ),
    Mistake(
        "kv-cache",
        "drops_last_token",
        "shapes",
        "your cache drops the last token",
        "the cache returned is the old one",
        (("        new_cache.append((k, v))\n", "        new_cache.append((k_past, v_past))\n"),),
    ),
    Mistake(
        "kv-cache",
        "k_v_swapped",
        "first step",
        "k and v are swapped",
        "scores from v, the output from k",
        (
            (
                '        weights = torch.softmax(q @ k.T / math.sqrt(D), dim=-1)  # (1, T_past + 1): nothing to mask\n        x = x + weights @ v @ layer["W_o"]  # (1, D)\n',
                '        weights = torch.softmax(q @ v.T / math.sqrt(D), dim=-1)  # (1, T_past + 1)\n        x = x + weights @ k @ layer["W_o"]  # (1, D)\n',
            ),
        ),
    ),
    Mistake(
        "kv-cache",
        "keeps_newest_only",
        "cache grows",
        "keeps only the newest token",
        "the cache replaced by this token's row",
        (("        new_cache.append((k, v))\n", '        new_cache.append((h @ layer["W_k"], h @ layer["W_v"]))\n'),),
    ),
    Mistake(
        "kv-cache",
        "logits_not_squeezed",
        "shapes",
        "logits[0]",
        "the (1, VOCAB) row returned",
        (("    return logits[0], new_cache\n", "    return logits, new_cache\n"),),
    ),
    Mistake(
        "kv-cache",
        "no_scale",
        "every step",
        "not divided by √D",
        "the scores not scaled",
        (
            (
                "        weights = torch.softmax(q @ k.T / math.sqrt(D), dim=-1)  # (1, T_past + 1): nothing to mask\n",
                "        weights = torch.softmax(q @ k.T, dim=-1)  # (1, T_past + 1)\n",
            ),
        ),
    ),
    Mistake(
        "kv-cache",
        "position_len_cache",
        "first step",
        "counts layers, not tokens",
        "the position taken as len(cache)",
        (
            (
                "    position = cache[0][0].shape[0]  # T_past: the tokens before this one\n",
                "    position = len(cache)  # the cache's length?\n",
            ),
        ),
    ),
    Mistake(
        "kv-cache",
        "position_off_by_one",
        "first step",
        "one too far",
        "the position counted after the new token",
        (
            (
                "    position = cache[0][0].shape[0]  # T_past: the tokens before this one\n",
                "    position = cache[0][0].shape[0] + 1  # counting this token too\n",
            ),
        ),
    ),
    Mistake(
        "kv-cache",
        "position_zero",
        "every step",
        "position is always 0",
        "every token embedded at position 0",
        (("    position = cache[0][0].shape[0]  # T_past: the tokens before this one\n", "    position = 0\n"),),
    ),
    Mistake(
        "kv-cache",
        "query_from_cache",
        "every step",
        "the query is a key",
        "the query read from the cache's last row",
        (
            ('        q = h @ layer["W_q"]  # (1, D)\n', ""),
            (
                "        new_cache.append((k, v))\n",
                "        new_cache.append((k, v))\n        q = k[-1:]  # the newest row of the cache\n",
            ),
        ),
    ),
    Mistake(
        "kv-cache",
        "softmax_wrong_axis",
        "every step",
        "wrong axis",
        "the softmax over dim 0",
        (
            (
                "        weights = torch.softmax(q @ k.T / math.sqrt(D), dim=-1)  # (1, T_past + 1): nothing to mask\n",
                "        weights = torch.softmax(q @ k.T / math.sqrt(D), dim=0)  # (1, T_past + 1)\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "added_probabilities",
        "score",
        "the probabilities are added",
        "probabilities added",
        (
            (
                "                    candidates.append(([*tokens, token], logprob + logp[token]))\n",
                "                    candidates.append(([*tokens, token], logprob + np.exp(logp[token])))\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "best_by_logprob",
        "brute force",
        "picked by its log-probability",
        "the best chosen by raw log-probability",
        (
            (
                "                finished.append((tokens[:-1], logprob / length_penalty(len(tokens), alpha)))  # n counts eos\n",
                "                score = logprob / length_penalty(len(tokens), alpha)\n                finished.append((tokens[:-1], score, logprob))\n",
            ),
            (
                "    return max(finished, key=lambda hypothesis: hypothesis[1])\n",
                "    best = max(finished, key=lambda hypothesis: hypothesis[2])\n    return best[0], best[1]\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "eos_never_allowed",
        "result",
        "eos is never allowed before the last step",
        "eos only at the last step",
        (
            (
                "                if t < max_len or token == eos:  # at the last place only eos may follow\n",
                "                if (t < max_len) == (token != eos):  # eos only at the end\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "grows_after_eos",
        "eos first",
        "finished hypotheses keep growing after </s>",
        "finished hypotheses stay live",
        (
            (
                "        live = [candidate for candidate in candidates if candidate[0][-1] != eos][:beam_size]\n",
                "        live = candidates[:beam_size]\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "live_shrinks",
        "narrow beams",
        "the live beam shrinks",
        "live = the non-eos among the best beam_size",
        (
            (
                "        live = [candidate for candidate in candidates if candidate[0][-1] != eos][:beam_size]\n        if len(finished) >= beam_size:\n",
                "        live = [candidate for candidate in candidates[:beam_size] if candidate[0][-1] != eos]\n        if len(finished) >= beam_size or not live:\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "lp_before_token",
        "score",
        "the length before this token",
        "n counted without the eos",
        (
            (
                "                finished.append((tokens[:-1], logprob / length_penalty(len(tokens), alpha)))  # n counts eos\n",
                "                finished.append((tokens[:-1], logprob / length_penalty(len(tokens) - 1, alpha)))\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "lp_counts_bos",
        "score",
        "n counts bos too",
        "n counted with bos",
        (
            (
                "                finished.append((tokens[:-1], logprob / length_penalty(len(tokens), alpha)))  # n counts eos\n",
                "                finished.append((tokens[:-1], logprob / length_penalty(len(tokens) + 1, alpha)))  # bos too\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "multiplied_logprobs",
        "result",
        "the log-probabilities are multiplied",
        "log-probabilities multiplied from 1.0",
        (
            (
                "    live = [([], 0.0)]  # (tokens after bos, summed log-probability)\n",
                "    live = [([], 1.0)]  # (tokens after bos, product of log-probabilities)\n",
            ),
            (
                "                    candidates.append(([*tokens, token], logprob + logp[token]))\n",
                "                    candidates.append(([*tokens, token], logprob * logp[token]))\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "never_pruned",
        "result",
        "more than beam_size hypotheses are live",
        "every non-eos candidate stays live",
        (
            (
                "        live = [candidate for candidate in candidates if candidate[0][-1] != eos][:beam_size]\n",
                "        live = [candidate for candidate in candidates if candidate[0][-1] != eos]\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "no_eos_at_the_limit",
        "length limit",
        "only eos may follow",
        "every token allowed at every step",
        (
            ("    for t in range(1, max_len + 1):\n", "    for _ in range(max_len):\n"),
            (
                "                if t < max_len or token == eos:  # at the last place only eos may follow\n                    candidates.append(([*tokens, token], logprob + logp[token]))\n",
                "                candidates.append(([*tokens, token], logprob + logp[token]))\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "no_penalty",
        "score",
        "the plain log-probability",
        "the score never divided by the length penalty",
        (
            (
                "                finished.append((tokens[:-1], logprob / length_penalty(len(tokens), alpha)))  # n counts eos\n",
                "                finished.append((tokens[:-1], logprob))\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "penalty_every_step",
        "score",
        "applied at every step",
        "the running score divided by lp at every step",
        (
            (
                "                    candidates.append(([*tokens, token], logprob + logp[token]))\n",
                "                    score = (logprob + logp[token]) / length_penalty(len(tokens) + 1, alpha)\n                    candidates.append(([*tokens, token], score))\n",
            ),
            (
                "                finished.append((tokens[:-1], logprob / length_penalty(len(tokens), alpha)))  # n counts eos\n",
                "                finished.append((tokens[:-1], logprob))  # already divided\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "prefix_without_bos",
        "result",
        "every prefix starts with bos",
        "step given the tokens without bos",
        (
            (
                "            logp = step([bos, *tokens]).tolist()  # (V,) log-probabilities of the next token\n",
                "            logp = step(tokens).tolist()  # (V,) log-probabilities of the next token\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "pruned_per_parent",
        "result",
        "not every child, nor the best of each parent",
        "each live hypothesis keeps its own best beam_size children, and all of them stay live",
        (
            ("        candidates = []\n", "        candidates = []\n        best_children = []\n"),
            (
                "                    candidates.append(([*tokens, token], logprob + logp[token]))\n",
                "                    candidates.append(([*tokens, token], logprob + logp[token]))\n            best_children += sorted(candidates[-len(logp) :], key=lambda c: -c[1])[:beam_size]\n",
            ),
            (
                "        live = [candidate for candidate in candidates if candidate[0][-1] != eos][:beam_size]\n",
                "        live = [candidate for candidate in best_children if candidate[0][-1] != eos]\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "returns_bos",
        "result",
        "leave bos out",
        "the tokens returned with bos first",
        (
            (
                "    return max(finished, key=lambda hypothesis: hypothesis[1])\n",
                "    tokens, score = max(finished, key=lambda hypothesis: hypothesis[1])\n    return [bos, *tokens], score\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "returns_eos",
        "result",
        "leave eos out",
        "the tokens returned with their eos",
        (
            (
                "                finished.append((tokens[:-1], logprob / length_penalty(len(tokens), alpha)))  # n counts eos\n",
                "                finished.append((tokens, logprob / length_penalty(len(tokens), alpha)))  # n counts eos\n",
            ),
        ),
    ),
    Mistake(
        "beam-search",
        "stops_at_first_finished",
        "brute force",
        "stops at the first finished",
        "the search ends when one has finished",
        (("        if len(finished) >= beam_size:\n", "        if finished:\n"),),
    ),
]

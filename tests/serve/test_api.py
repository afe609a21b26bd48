"""The JSON API of `kqv serve`, through FastAPI's test client, against numbers computed independently."""

import json
import math
import re

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from kqv.errors import UserError  # noqa: E402
from kqv.families import load_subject  # noqa: E402
from kqv.generate.sampling import MAX_SEED, TEMPERATURE_FLOOR, generate  # noqa: E402
from kqv.inspect.attention import token_label, token_texts  # noqa: E402
from kqv.inspect.cache import run_with_cache  # noqa: E402
from kqv.serve.app import STATIC, create_app  # noqa: E402
from kqv.serve.explorer import MAX_TEXT_CHARS, WHY_METHODS, Explorer  # noqa: E402

PIZZA = "The pizza came out of the oven and it tasted good"


@pytest.fixture(scope="module")
def served(one_torch_thread):
    gpt = Explorer("gpt", load_subject(preset="default", seed=3))
    tiny = Explorer("tiny", load_subject(preset="tiny", seed=1))
    translation = Explorer("translation", load_subject(preset="translate/tiny", seed=2))
    client = TestClient(create_app([gpt, tiny, translation]))
    return client, {"gpt": gpt, "tiny": tiny, "translation": translation}


def post(client, path, **body):
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def error(client, path, status, body=None, content=None):
    if content is None:
        response = client.post(path, json=body)
    else:
        response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


def test_models_lists_each_served_model_with_its_shapes(served):
    client, _ = served
    answer = client.get("/api/models").json()
    by_id = {m["id"]: m for m in answer["models"]}
    assert list(by_id) == ["gpt", "tiny", "translation"]
    assert by_id["gpt"]["layers"] == {"self": 4} and by_id["gpt"]["n_head"] == 4 and by_id["gpt"]["max_tokens"] == 128
    assert by_id["translation"]["kinds"] == ["encoder", "decoder", "cross"]
    assert answer["example"] == PIZZA and answer["max_text_chars"] == MAX_TEXT_CHARS


def test_gpt_attention_is_softmax_of_the_models_own_queries_and_keys(served):
    """Each pattern = softmax(q·kᵀ/√hs) with the causal triangle removed, q and k read from the activation cache."""
    client, explorers = served
    answer = post(client, "/api/attention", model="gpt", text=PIZZA)
    maps = answer["attention"]["self"]
    P = np.array(maps["patterns"])  # (L, nh, T, T)
    model = explorers["gpt"].subject.model
    ids = explorers["gpt"].subject.tokenizer.encode(PIZZA)
    T = len(ids)
    assert P.shape == (4, 4, T, T) and len(maps["query_tokens"]) == T
    _, cache = run_with_cache(model, torch.tensor([ids]), names="*.attn.[qk]")
    causal = np.tril(np.ones((T, T), dtype=bool))
    for layer in range(4):
        q = cache[f"blocks.{layer}.attn.q"][0].double().numpy()  # (nh, T, hs)
        k = cache[f"blocks.{layer}.attn.k"][0].double().numpy()
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])  # (nh, T, T)
        scores = np.where(causal, scores, -np.inf)
        reference = np.exp(scores - scores.max(-1, keepdims=True))
        reference /= reference.sum(-1, keepdims=True)
        np.testing.assert_allclose(P[layer], reference, atol=2e-6)
    np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-5)  # every row a distribution
    assert np.array(maps["allowed"]).tolist() == causal.tolist()
    assert (P[..., ~causal] == 0).all()


def test_one_layer_and_head_is_the_slice_of_all(served):
    client, _ = served
    everything = np.array(post(client, "/api/attention", model="gpt", text=PIZZA)["attention"]["self"]["patterns"])
    one = post(client, "/api/attention", model="gpt", text=PIZZA, layer=2, head=1)["attention"]["self"]
    assert one["layers"] == [2] and one["heads"] == [1]
    np.testing.assert_array_equal(np.array(one["patterns"])[0, 0], everything[2, 1])
    layer = post(client, "/api/attention", model="gpt", text=PIZZA, layer=3)["attention"]["self"]
    assert np.array(layer["patterns"]).shape[:2] == (1, 4)


def test_translation_attention_has_three_kinds_and_hides_only_the_decoders_future(served):
    client, explorers = served
    answer = post(client, "/api/attention", model="translation", text="In the beginning God created the heaven")
    assert answer["target"] is not None  # the model's own greedy translation
    a = answer["attention"]
    for kind, masked in [("encoder", False), ("decoder", True), ("cross", False)]:
        P = np.array(a[kind]["patterns"])
        allowed = np.array(a[kind]["allowed"])
        assert (~allowed).any() == masked, kind  # PITFALL 16: only the causal decoder has a hidden triangle
        np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-5)
    assert len(a["cross"]["query_tokens"]) == len(a["decoder"]["query_tokens"])
    assert len(a["cross"]["key_tokens"]) == len(a["encoder"]["key_tokens"])
    assert a["encoder"]["key_tokens"][-1]["text"] == "</s>" and a["decoder"]["query_tokens"][0]["text"] == "<s>"
    given = post(client, "/api/attention", model="translation", text="In the beginning", target="En el principio")
    assert given["target"] == "En el principio"
    only = post(client, "/api/attention", model="translation", text="In the beginning", kind="cross", layer=0, head=1)
    assert list(only["attention"]) == ["cross"]


def _reference_distribution(logits: np.ndarray, temperature: float, top_k=None, top_p=None) -> np.ndarray:
    """Sampling's distribution written out with NumPy: divide, keep the k best, keep the nucleus, renormalise."""
    z = logits / temperature
    keep = np.ones_like(z, dtype=bool)
    order = np.argsort(-z, kind="stable")
    if top_k is not None:
        keep[order[top_k:]] = False
    z = np.where(keep, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None:
        sorted_p = p[order]
        before = np.cumsum(sorted_p) - sorted_p  # mass of the more likely tokens
        drop = before >= top_p
        drop[0] = False
        keep[order[drop]] = False
        z = np.where(keep, z, -np.inf)
        p = np.exp(z - z.max())
        p /= p.sum()
    return p


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, None, None), (0.5, None, None), (1.7, 5, None), (1.0, None, 0.6), (0.8, 10, 0.9)]
)
def test_next_token_probabilities_match_a_numpy_reference(served, temperature, top_k, top_p):
    client, explorers = served
    answer = post(client, "/api/next-token", model="gpt", text=PIZZA, temperature=temperature, top_k=top_k,
                  top_p=top_p, show=65)  # fmt: skip
    subject = explorers["gpt"].subject
    with torch.no_grad():
        logits = subject.model(torch.tensor([subject.tokenizer.encode(PIZZA)])).logits[0, -1].double().numpy()
    raw = _reference_distribution(logits, 1.0)
    expected = _reference_distribution(logits, temperature, top_k, top_p)
    rows = answer["tokens"]
    assert len(rows) == 65 and [r["id"] for r in rows] == sorted(range(65), key=lambda i: -logits[i])
    for r in rows:
        assert r["raw"] == pytest.approx(raw[r["id"]], abs=2e-6)
        assert r["prob"] == pytest.approx(expected[r["id"]], abs=2e-6)
    assert answer["kept"] == int((expected > 0).sum())
    nonzero = expected[expected > 0]
    assert answer["entropy"] == pytest.approx(-(nonzero * np.log(nonzero)).sum(), abs=1e-5)


def test_temperature_zero_puts_all_mass_on_the_most_likely_token(served):
    client, _ = served
    answer = post(client, "/api/next-token", model="gpt", text=PIZZA, temperature=0)
    assert answer["tokens"][0]["prob"] == 1.0 and all(r["prob"] == 0 for r in answer["tokens"][1:])
    assert answer["kept"] == 1


def _stream(client, **body) -> list[dict]:
    with client.stream("POST", "/api/generate", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def test_generate_streams_the_same_tokens_as_kqv_gpt_sample(served):
    client, explorers = served
    subject = explorers["tiny"].subject
    prompt = subject.tokenizer.encode("ROMEO:")
    for temperature, top_k, seed in [(0.0, None, None), (0.9, 20, 7)]:
        lines = _stream(client, model="tiny", text="ROMEO:", max_new_tokens=40, temperature=temperature,
                        top_k=top_k, seed=seed)  # fmt: skip
        *tokens, done = lines
        expected = list(generate(subject.model, prompt, 40, temperature, top_k, None, seed))
        assert [t["token"] for t in tokens] == expected  # 40 tokens: past block_size 32, the window moves
        assert done["done"] and done["tokens"] == 40
        assert done["text"] == subject.tokenizer.decode(expected) == "".join(t["text"] for t in tokens)


def test_streamed_text_never_splits_a_character_over_bpe_tokens(served):
    """Byte-level BPE cuts rare characters into byte tokens; each streamed piece is what Python's incremental
    UTF-8 decoder gives for that token's bytes: nothing until a character is whole, then all of it."""
    import codecs

    from kqv.inspect.attention import _BYTE_OF

    _, explorers = served
    explorer = explorers["translation"]
    tokenizer = explorer.subject.tokenizer
    text = "año “ñu”"
    ids = tokenizer.encode(text)
    pieces = [line["text"] for line in explorer._stream(iter(ids))][:-1]
    utf8 = codecs.getincrementaldecoder("utf-8")()
    expected = [utf8.decode(bytes(_BYTE_OF[c] for c in tokenizer.hf.id_to_token(i))) for i in ids]
    assert "" in expected  # some character here takes several tokens
    assert pieces == expected and "".join(pieces) == text


def test_translation_generation_at_temperature_zero_is_greedy_decoding(served):
    from kqv.generate.beam import greedy_decode

    client, explorers = served
    subject = explorers["translation"].subject
    source = "And God said, Let there be light"
    *tokens, done = _stream(client, model="translation", text=source, max_new_tokens=63, temperature=0)
    c = subject.model.config
    greedy = greedy_decode(subject.model, torch.tensor([[*subject.tokenizer.encode(source), c.eos_id]]), 100, 0)
    assert [t["token"] for t in tokens] == greedy[0].tokens
    assert done["text"] == subject.tokenizer.decode(greedy[0].tokens)


def test_tokenize_and_explain(served):
    client, explorers = served
    tokens = post(client, "/api/tokenize", model="tiny", text="it tasted")["tokens"]
    assert [t["text"] for t in tokens] == list("it tasted") and tokens[2]["label"] == "␣"
    shapes = post(client, "/api/explain", model="gpt", text=PIZZA)
    by_name = {row["name"]: row["shape"] for row in shapes["tensors"]}
    assert by_name["blocks.0.attn.pattern"] == [1, 4, len(PIZZA), len(PIZZA)]
    assert shapes["total_parameters"] == sum(p.numel() for p in explorers["gpt"].subject.model.parameters())
    assert post(client, "/api/explain", model="translation", text="In the beginning")["family"] == "translation"


@pytest.mark.parametrize(
    "path,body,status,says",
    [
        ("/api/attention", {"model": "nope", "text": "hi"}, 404, "no model 'nope'"),
        ("/api/attention", {"model": "../runs/gpt", "text": "hi"}, 404, "choose one of: gpt, tiny, translation"),
        ("/api/attention", {"model": "gpt", "text": "hi", "layer": 4}, 422, "layer 4 is out of range"),
        ("/api/attention", {"model": "gpt", "text": "hi", "head": -1}, 422, "head -1 is out of range"),
        ("/api/attention", {"model": "gpt", "text": "hi", "kind": "cross"}, 422, "kind 'cross'"),
        ("/api/attention", {"model": "gpt", "text": "hi", "target": "x"}, 422, "target is for translation"),
        ("/api/attention", {"model": "translation", "text": "hi", "kind": "decoder", "layer": 1}, 422, "layer 1"),
        ("/api/attention", {"model": "gpt", "text": "x" * (MAX_TEXT_CHARS + 1)}, 422, "String should have at most"),
        ("/api/attention", {"model": "gpt", "text": "x" * 129}, 422, "129 tokens but this model reads at most 128"),
        ("/api/attention", {"model": "gpt", "text": "   "}, 422, "empty"),
        ("/api/attention", {"model": "gpt", "text": "naïve"}, 422, "'ï'"),
        ("/api/attention", {"model": "gpt"}, 422, "text is missing"),
        ("/api/attention", {"model": "gpt", "text": "hi", "layers": 1}, 422, "layers is not a field"),
        ("/api/attention", {"model": "gpt", "text": "hi", "layer": "first"}, 422, "layer:"),
        ("/api/next-token", {"model": "gpt", "text": "hi", "temperature": -1}, 422, "temperature"),
        ("/api/next-token", {"model": "gpt", "text": "hi", "top_p": 0}, 422, "top_p"),
        ("/api/next-token", {"model": "gpt", "text": "hi", "top_k": 0}, 422, "top_k"),
        ("/api/generate", {"model": "gpt", "text": "hi", "max_new_tokens": 501}, 422, "max_new_tokens"),
        ("/api/generate", {"model": "gpt", "text": ""}, 422, "empty"),
        ("/api/generate", {"model": "gpt", "text": "\u2028\t\u3000"}, 422, "empty"),
        ("/api/generate", {"model": "gpt", "text": "hi", "seed": MAX_SEED + 1}, 422, "seed: Input should be less"),
        ("/api/generate", {"model": "gpt", "text": "hi", "seed": -1}, 422, "seed: Input should be greater"),
        ("/api/generate", {"model": "gpt", "text": "hi", "seed": 10**400}, 422, "seed"),
        ("/api/generate", {"model": "gpt", "text": "hi", "seed": 1.5}, 422, "seed"),
        ("/api/generate", {"model": "gpt", "text": "hi", "temperature": 10.01}, 422, "temperature"),
        (
            "/api/why",
            {"model": "gpt", "text": PIZZA, "corrupt": "pizza=cake"},
            422,
            "the corrupted text is 48 tokens and the clean one 49; patching swaps",
        ),
        (
            "/api/why",
            {"model": "gpt", "text": PIZZA, "target": "tasted"},
            422,
            "target 'tasted' is 6 tokens ('t', 'a', 's', 't', 'e', 'd') for this model",
        ),
        ("/api/why", {"model": "gpt", "text": PIZZA, "other": "ü"}, 422, "other 'ü': this model's vocabulary cannot"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "target": "t", "other": "t"}, 422, "name the same token"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "corrupt": "pizza"}, 422, "corrupt 'pizza': write WORD=WORD"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "corrupt": "cat=dog"}, 422, "'cat' is not a word of the text"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "corrupt": "pizza=pizza"}, 422, "the same as the clean one"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "corrupt_text": PIZZA}, 422, "corrupt_text is not a field"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "query_index": 49}, 422, "query_index 49 is out of range"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "query_index": 10**6}, 422, "query_index: Input should be less"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "query_token": "it", "query_index": 1}, 422, "not both"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "query_token": "cat"}, 422, "query_token 'cat' is not a word"),
        (
            "/api/why",
            {"model": "gpt", "text": PIZZA, "methods": ["lens", "x"]},
            422,
            "methods.1: Input should be 'lens'",
        ),
        ("/api/why", {"model": "gpt", "text": PIZZA, "methods": []}, 422, "methods: List should have at least 1"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "steps": 0}, 422, "steps: Input should be greater"),
        (
            "/api/why",
            {"model": "gpt", "text": PIZZA, "steps": 257},
            422,
            "steps: Input should be less than or equal to 256",
        ),
        (
            "/api/why",
            {"model": "gpt", "text": PIZZA, "baseline": "one"},
            422,
            "baseline: Input should be 'zero' or 'mean'",
        ),
        ("/api/why", {"model": "gpt", "text": PIZZA, "top": 21}, 422, "top: Input should be less"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "translation": "x"}, 422, "translation is for translation runs"),
        ("/api/why", {"model": "gpt", "text": "x" * 129}, 422, "129 tokens but this model reads at most 128"),
        ("/api/why", {"model": "gpt", "text": " "}, 422, "empty"),
        ("/api/why", {"model": "gpt", "text": PIZZA, "show": 3}, 422, "show is not a field"),
        (
            "/api/why",
            {"model": "translation", "text": "In the beginning", "methods": ["dla"]},
            422,
            "method dla is for GPT runs",
        ),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(served, path, body, status, says):
    client, _ = served
    assert says in error(client, path, status, body)


def test_broken_json_is_a_400():
    client = TestClient(create_app([]))
    broken = b'{"model": "gpt", "text": '
    response = client.post("/api/attention", content=broken, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("the request body is not valid JSON")


def test_the_page_and_its_assets_come_from_kqv_alone(served):
    """No CDN (PITFALL 16): the page, its script and style name no other host; the interactive docs (CDN) are off."""
    client, _ = served
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name in ("index.html", "attention.js", "why.js", "explorer.js", "explorer.css"):
        text = (STATIC / name).read_text()
        hosts = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+", text)) - {"http://www.w3.org"}  # the SVG namespace
        assert not hosts, f"{name} names {hosts}"
        assert client.get(f"/static/{name}").status_code == 200
    for ref in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert ref.startswith(("/", "data:")), ref
    assert client.get("/docs").status_code == 404
    spec = client.get("/openapi.json").json()
    api = [
        "/api/models",
        "/api/tokenize",
        "/api/attention",
        "/api/next-token",
        "/api/generate",
        "/api/explain",
        "/api/why",
    ]
    assert set(api) <= set(spec["paths"])


@pytest.mark.parametrize("temperature", [0.0, 5e-324, 1e-300, TEMPERATURE_FLOOR / 2])
def test_temperatures_below_the_floor_are_greedy_and_their_streams_complete(served, temperature):
    """1e-300 once cut the stream after its 200 and gave kept 0: now greedy, like kqv.generate.sampling."""
    client, _ = served
    for model, text in [("tiny", "ROMEO:"), ("translation", "And God said")]:
        answer = post(client, "/api/next-token", model=model, text=text, temperature=temperature)
        probs = sorted(row["prob"] for row in answer["tokens"])  # translation's top row may be <s>: prob 0
        assert answer["kept"] == 1 and probs[-1] == 1.0 and probs[-2] == 0.0 and answer["entropy"] == 0.0
        *tokens, done = _stream(client, model=model, text=text, max_new_tokens=12, temperature=temperature)
        *greedy, _ = _stream(client, model=model, text=text, max_new_tokens=12, temperature=0)
        assert done["done"] and done["tokens"] == len(tokens) > 0
        assert [t["token"] for t in tokens] == [t["token"] for t in greedy]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
def test_non_finite_numbers_in_a_body_are_refused_before_any_stream(served, number):
    """Python's json reads NaN, Infinity and 1e999 (as inf): pydantic refuses them as not finite."""
    client, _ = served
    for path in ["/api/next-token", "/api/generate"]:
        for field in ["temperature", "top_p"]:
            body = b'{"model": "tiny", "text": "ROMEO:", "%s": %s}' % (field.encode(), number)
            says = error(client, path, 422, content=body)
            assert says.startswith(f"{field}: Input should be a finite number")


def test_the_largest_seed_streams_what_kqv_gpt_sample_draws(served):
    client, explorers = served
    subject = explorers["tiny"].subject
    *tokens, done = _stream(client, model="tiny", text="ROMEO:", max_new_tokens=10, seed=MAX_SEED)
    expected = list(generate(subject.model, subject.tokenizer.encode("ROMEO:"), 10, 1.0, None, None, MAX_SEED))
    assert [t["token"] for t in tokens] == expected and done["done"]


def test_a_generation_that_fails_at_its_first_token_never_answers_200(served, monkeypatch):
    """The first token is computed before the stream starts: a failure there is an error answer, not a cut stream."""
    _, explorers = served
    client = TestClient(create_app(list(explorers.values())), raise_server_exceptions=False)

    def refuses(*args):
        raise UserError("the model refuses")
        yield

    def breaks(*args):
        raise RuntimeError("a bug\nover two lines")
        yield

    monkeypatch.setattr(explorers["tiny"], "_steps", refuses)
    assert error(client, "/api/generate", 422, {"model": "tiny", "text": "ROMEO:"}) == "the model refuses"
    monkeypatch.setattr(explorers["tiny"], "_steps", breaks)
    says = error(client, "/api/generate", 500, {"model": "tiny", "text": "ROMEO:"})
    assert says == "kqv failed on this request (RuntimeError: a bug over two lines); please report it"


# --- /api/why


def same_numbers(api, direct, where="") -> None:
    """The API's answer holds exactly `direct`'s values: float32 arrays as float32 (the API writes each in its
    shortest float32 form; `direct`, kqv.inspect.why.plain, as the float64 of that float32), the rest as is."""
    if isinstance(direct, dict):
        assert set(direct) <= set(api), f"{where}: {set(direct) - set(api)} missing"
        for key, value in direct.items():
            same_numbers(api[key], value, f"{where}.{key}")
    elif isinstance(direct, list) and np.asarray(direct, dtype=object).size and _is_float_array(direct):
        assert np.asarray(api).shape == np.asarray(direct).shape, where
        np.testing.assert_array_equal(np.asarray(api, dtype=np.float32), np.asarray(direct, dtype=np.float32), where)
    elif isinstance(direct, list) and direct and isinstance(direct[0], dict):
        assert len(api) == len(direct), where
        for i, (a, d) in enumerate(zip(api, direct, strict=True)):
            same_numbers(a, d, f"{where}[{i}]")
    else:
        assert api == direct, f"{where}: {api!r} != {direct!r}"


def _is_float_array(value) -> bool:
    return all(isinstance(x, float) for x in np.asarray(value, dtype=object).ravel())


def test_why_answers_exactly_what_the_family_computes(served):
    """POST /api/why = family.why(...).to_dict(), every number and line; plus the lens's top tokens as text."""
    client, explorers = served
    subject = explorers["gpt"].subject
    answer = post(client, "/api/why", model="gpt", text=PIZZA, query_token="it", corrupt="pizza=cakes", steps=8)
    direct = subject.family.why(
        subject.model, subject.tokenizer, PIZZA, list(WHY_METHODS), query_token="it", corrupt="pizza=cakes", steps=8
    ).to_dict()
    assert answer["model"] == "gpt" and answer["family"] == "gpt"
    same_numbers(answer, direct)
    results = answer["results"]
    assert set(results) >= {"attention", "lens", "dla", "patch", "rollout", "grad", "heads"}
    T = len(PIZZA)
    assert answer["position"] == PIZZA.index(" it ") + 2 and answer["tokens"] == [token_label(c) for c in PIZZA]
    assert np.asarray(results["patch"]["resid"]).shape == (4, T) and np.asarray(results["patch"]["heads"]).shape == (
        4,
        4,
    )
    assert np.asarray(results["lens"]["target_prob"]).shape == (5, T)
    top_ids = np.asarray(results["lens"]["top_ids"])
    assert top_ids.shape == (5, T, 5)
    labels = [token_label(t) for t in token_texts(subject.tokenizer, top_ids.ravel().tolist())]
    assert np.array(results["lens"]["top_tokens"]).ravel().tolist() == labels
    assert answer["target"]["label"] == token_label(answer["target"]["text"])
    # float32 as computed: the patterns are those of /api/attention, to the bit
    maps = post(client, "/api/attention", model="gpt", text=PIZZA)["attention"]["self"]["patterns"]
    assert results["attention"] == maps


def test_why_without_a_corruption_notes_that_patching_needs_one(served):
    client, explorers = served
    answer = post(client, "/api/why", model="tiny", text="ROMEO: it is", methods=["patch", "lens", "patch"], top=3)
    assert "patch" not in answer["results"] and set(answer["results"]) >= {"lens", "attention"}
    assert any("patching needs a corrupted text" in note for note in answer["notes"])
    assert np.asarray(answer["results"]["lens"]["top_ids"]).shape[-1] == 3
    assert answer["position"] == len("ROMEO: it is") - 1  # the last token by default
    subject = explorers["tiny"].subject
    direct = subject.family.why(subject.model, subject.tokenizer, "ROMEO: it is", ["patch", "lens"], top=3).to_dict()
    same_numbers(answer, direct)


def test_translation_why_answers_what_its_family_computes(served):
    client, explorers = served
    subject = explorers["translation"].subject
    answer = post(client, "/api/why", model="translation", text="In the beginning", steps=4)
    direct = subject.family.why(subject.model, subject.tokenizer, "In the beginning", list(WHY_METHODS), steps=4)
    same_numbers(answer, direct.to_dict())
    assert answer["family"] == "translation" and "source" in answer["results"]
    assert len(answer["source_tokens"]) == np.asarray(answer["results"]["source"]["cross"]).shape[1]


def test_why_answers_validate_against_the_documented_schema(served):
    """Both families' answers, with and without a corruption, are what /openapi.json promises."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    client, _ = served
    spec = client.get("/openapi.json").json()
    schema = spec["paths"]["/api/why"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.validator_for({**schema, "components": spec["components"]})
    for body in [
        {"model": "tiny", "text": "ROMEO: it is", "corrupt": "it=at", "steps": 2},
        {"model": "tiny", "text": "ROMEO: it is", "methods": ["lens"], "query_index": 3},
        {"model": "translation", "text": "In the beginning", "steps": 2},
        {"model": "translation", "text": "In the beginning", "corrupt": "the=a", "steps": 2},
    ]:
        answer = post(client, "/api/why", **body)
        assert ("patch" in answer["results"]) == ("corrupt" in body)
        validator.validate(answer)
        assert not validator.is_valid({**answer, "results": {"lens": {"rows": 3}}})  # the control: it does check

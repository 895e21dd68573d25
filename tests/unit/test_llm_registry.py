"""Model strings to providers: every prefix, caching, unknown names, missing keys (nothing is loaded or called)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voiceserver.engines import ProviderError
from voiceserver.llm import (
    FallbackChatModel,
    LlamaCppModel,
    ModelContext,
    ModelRegistry,
    OpenAICompatibleModel,
    UnknownModelError,
)
from voiceserver.llm.openai_compatible import GOOGLE_OPENAI_BASE_URL
from voiceserver.settings import Settings
from voiceserver.testing.fake_llm import ScriptedChatModel


@pytest.fixture
def registry(models_dir: Path) -> ModelRegistry:
    return ModelRegistry(ModelContext(
        models_dir=models_dir, openai_api_key="sk-test", openai_base_url="http://127.0.0.1:9/v1",
        google_ai_api_key="g-key", openai_compatible_base_url="http://127.0.0.1:11434/v1",
        openai_compatible_api_key=None, threads=1, pool=2, max_tokens=99, temperature=0.1))


def test_local_model_is_built_with_the_context_settings_and_not_loaded(registry, models_dir):
    model = registry.resolve("local/smollm2")
    assert isinstance(model, LlamaCppModel)
    assert model.id == "local/smollm2"
    assert model.model_path == models_dir / "llm" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (model.threads, model.pool, model.max_tokens, model.temperature) == (1, 2, 99, 0.1)
    assert not model.loaded


def test_openai_prefix(registry):
    model = registry.resolve("openai/gpt-4o-mini")
    assert isinstance(model, OpenAICompatibleModel)
    assert (model.model, model.provider, model.base_url, model.id) == (
        "gpt-4o-mini", "openai", "http://127.0.0.1:9/v1", "openai/gpt-4o-mini")


def test_google_prefix_uses_googles_openai_endpoint(registry):
    model = registry.resolve("google/gemini-2.0-flash")
    assert isinstance(model, OpenAICompatibleModel)
    assert (model.model, model.provider, model.base_url) == ("gemini-2.0-flash", "google", GOOGLE_OPENAI_BASE_URL)


def test_openai_compatible_prefix_keeps_slashes_in_the_model_name(registry):
    model = registry.resolve("openai-compatible/meta-llama/Llama-3.1-8B-Instruct")
    assert isinstance(model, OpenAICompatibleModel)
    assert (model.model, model.provider, model.base_url) == (
        "meta-llama/Llama-3.1-8B-Instruct", "openai-compatible", "http://127.0.0.1:11434/v1")


def test_models_are_cached_per_registry(registry, models_dir):
    assert registry.resolve("local/smollm2") is registry.resolve(" local/smollm2 ")
    assert registry.resolve("openai/gpt-4o") is registry.resolve("openai/gpt-4o")
    assert registry.resolve("openai/gpt-4o") is not registry.resolve("openai/gpt-4o-mini")
    other = ModelRegistry(ModelContext(models_dir=models_dir))
    assert other.resolve("local/smollm2") is not registry.resolve("local/smollm2")


def test_a_list_is_a_fallback_chain_sharing_the_cached_models(registry):
    chain = registry.resolve(["openai/gpt-4o-mini", "local/smollm2"])
    assert isinstance(chain, FallbackChatModel)
    assert chain.models == [registry.resolve("openai/gpt-4o-mini"), registry.resolve("local/smollm2")]
    assert chain.id == "openai/gpt-4o-mini -> local/smollm2"
    assert registry.resolve(["openai/gpt-4o-mini", "local/smollm2"]) is chain
    assert registry.resolve(["local/smollm2"]) is registry.resolve("local/smollm2")


def test_chat_model_instances_pass_through(registry):
    scripted = ScriptedChatModel(["hi"])
    assert registry.resolve(scripted) is scripted
    chain = registry.resolve([scripted, "local/smollm2"])
    assert chain.models[0] is scripted


@pytest.mark.parametrize("spec", ["anthropic/claude", "smollm2", "local/", "/x", "ollama/llama3"])
def test_unknown_prefix_lists_the_known_ones(registry, spec):
    with pytest.raises(UnknownModelError) as err:
        registry.resolve(spec)
    assert err.value.code == "unknown_model"
    for prefix in ("local/", "openai/", "google/", "openai-compatible/"):
        assert prefix in err.value.message


def test_unknown_local_model_lists_the_local_ones(registry):
    with pytest.raises(UnknownModelError) as err:
        registry.resolve("local/llama-70b")
    assert "local/smollm2" in err.value.message


@pytest.mark.parametrize(("spec", "variable"), [
    ("openai/gpt-4o-mini", "OPENAI_API_KEY"),
    ("google/gemini-2.0-flash", "GOOGLE_AI_API_KEY"),
    ("openai-compatible/llama3", "VOICESERVER_LLM__OPENAI_COMPATIBLE_BASE_URL"),
])
def test_missing_configuration_names_the_environment_variable(models_dir, spec, variable):
    registry = ModelRegistry(ModelContext(models_dir=models_dir))
    with pytest.raises(ProviderError) as err:
        registry.resolve(spec)
    assert err.value.code == "not_configured"
    assert variable in err.value.message


def test_missing_local_file_says_how_to_fetch(tmp_path):
    registry = ModelRegistry(ModelContext(models_dir=tmp_path))
    with pytest.raises(ProviderError) as err:
        registry.resolve("local/smollm2")
    assert err.value.code == "model_missing" and "voiceserver models fetch" in err.value.message


def test_bad_spec_types_and_empty_lists(registry):
    with pytest.raises(ProviderError):
        registry.resolve([])
    with pytest.raises(ProviderError):
        registry.resolve(42)  # type: ignore[arg-type]


def test_context_from_settings(models_dir):
    settings = Settings(openai_api_key="sk-abc", google_ai_api_key="g", models_dir=models_dir,
                        llm={"threads": 3, "pool": 2, "max_tokens": 50, "openai_compatible_base_url": "http://h/v1",
                             "openai_compatible_api_key": "ck"})
    ctx = ModelContext.from_settings(settings)
    assert (ctx.openai_api_key, ctx.google_ai_api_key, ctx.openai_compatible_api_key) == ("sk-abc", "g", "ck")
    assert (ctx.threads, ctx.pool, ctx.max_tokens, ctx.openai_compatible_base_url) == (3, 2, 50, "http://h/v1")
    assert ctx.models_dir == models_dir


async def test_close_closes_every_model(registry):
    model = registry.resolve("openai/gpt-4o-mini")
    model._get_client()
    assert model._client is not None
    await registry.close()
    assert model._client is None
    assert registry.resolve("openai/gpt-4o-mini") is not model  # the cache was emptied


def test_default_registry_is_built_once_from_settings():
    from voiceserver.llm import default_registry

    first = default_registry()
    assert first is default_registry()
    assert isinstance(first.context, ModelContext)

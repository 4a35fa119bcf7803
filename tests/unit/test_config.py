"""Config loading: the embedded default, ``${ENV}`` interpolation, validation errors with key paths, secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from portico.config.loader import ConfigError, interpolate, load_config, validate
from portico.config.schema import GeminiDeployment, LocalDeployment, OpenAIDeployment, PorticoConfig, public_view

OPENAI = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}
SECRET = "sk-very-secret-value-123"


def write(tmp_path: Path, data: Any, name: str = "portico.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return p


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        validate(data)
    return str(exc.value)


def chat(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "deployments": [dict(OPENAI)], **kw}


# ---- the embedded default ------------------------------------------------------------------------------


def test_default_config_has_exactly_local_chat_and_local_embed() -> None:
    cfg = load_config(None)
    assert [(m.name, m.type) for m in cfg.models] == [("local", "chat"), ("local-embed", "embedding")]
    assert cfg.applications == []


def test_default_config_server_binds_localhost_8080() -> None:
    cfg = load_config(None)
    assert cfg.server.host == "127.0.0.1"
    assert cfg.server.port == 8080


def test_default_config_ignores_environment() -> None:
    cfg = load_config(None, env={"PORTICO_CONFIG": "/nope.yaml"})
    assert [m.name for m in cfg.models] == ["local", "local-embed"]


def test_default_local_deployments_get_packaged_model_ids() -> None:
    cfg = load_config(None)
    chat_dep = cfg.models[0].deployments[0]
    embed_dep = cfg.models[1].deployments[0]
    assert isinstance(chat_dep, LocalDeployment)
    assert isinstance(embed_dep, LocalDeployment)
    assert chat_dep.model == "SmolLM2-135M-Instruct"
    assert embed_dep.model == "all-MiniLM-L6-v2"
    assert chat_dep.label == "local/SmolLM2-135M-Instruct"


def test_local_deployment_model_id_comes_from_path() -> None:
    dep = {"provider": "local", "path": "/models/Qwen-0.5B.gguf"}
    cfg = validate({"models": [{"name": "m", "deployments": [dep]}]})
    assert cfg.models[0].deployments[0].model == "Qwen-0.5B"


def test_http_deployment_model_defaults_to_public_name() -> None:
    cfg = validate({"models": [chat("gpt-x")]})
    dep = cfg.models[0].deployments[0]
    assert isinstance(dep, OpenAIDeployment)
    assert dep.model == "gpt-x"
    assert dep.label == "openai/gpt-x"


# ---- files -------------------------------------------------------------------------------------------------


def test_load_config_from_file(tmp_path: Path) -> None:
    p = write(tmp_path, {"server": {"port": 9000}, "models": [chat("a")]})
    cfg = load_config(p, env={})
    assert isinstance(cfg, PorticoConfig)
    assert cfg.server.port == 9000
    assert [m.name for m in cfg.models] == ["a"]


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(missing, env={})
    assert "cannot read config file" in str(exc.value)
    assert str(missing) in str(exc.value)


def test_bad_yaml_is_config_error(tmp_path: Path) -> None:
    p = write(tmp_path, "models: [\n  - name: a\n    deployments: {{{\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p, env={})
    assert "is not valid YAML" in str(exc.value)
    assert str(p) in str(exc.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", ""])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p, env={})
    assert "top level must be a mapping" in str(exc.value)
    assert str(p) in str(exc.value)


def test_validation_error_names_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, {"models": [chat("a", typo=1)]})
    with pytest.raises(ConfigError) as exc:
        load_config(p, env={})
    assert f"invalid configuration in {p}" in str(exc.value)
    assert "models[0].typo: unknown key" in str(exc.value)


# ---- ${ENV} interpolation ------------------------------------------------------------------------------------


def test_interpolation_in_nested_lists_and_dicts(tmp_path: Path) -> None:
    data = {
        "server": {"port": "${PORT}"},
        "models": [
            {
                "name": "a",
                "deployments": [
                    {
                        "provider": "openai",
                        "base_url": "http://${HOST}:${UP_PORT:-9}/v1",
                        "api_key": "${KEY}",
                        "headers": {"x-team": "${TEAM:-core}"},
                    }
                ],
                "fallbacks": ["${FB}"],
            },
            chat("b"),
        ],
    }
    env = {"PORT": "8181", "HOST": "10.0.0.1", "KEY": SECRET, "FB": "b"}
    cfg = load_config(write(tmp_path, data), env=env)
    dep = cfg.models[0].deployments[0]
    assert isinstance(dep, OpenAIDeployment)
    assert cfg.server.port == 8181
    assert dep.base_url == "http://10.0.0.1:9/v1"
    assert dep.api_key is not None
    assert dep.api_key.get_secret_value() == SECRET
    assert dep.headers == {"x-team": "core"}
    assert cfg.models[0].fallbacks == ["b"]


def test_set_variable_wins_over_default() -> None:
    assert interpolate({"a": ["${X:-dflt}"]}, {"X": "set"}) == {"a": ["set"]}


def test_empty_default_is_allowed() -> None:
    assert interpolate({"a": "x${X:-}y"}, {}) == {"a": "xy"}


def test_empty_value_is_set() -> None:
    assert interpolate("${X:-dflt}", {"X": ""}) == ""


def test_interpolation_leaves_non_strings_and_plain_strings_alone() -> None:
    node = {"n": 3, "f": 1.5, "b": True, "none": None, "s": "plain $HOME {x}"}
    assert interpolate(node, {"HOME": "/root"}) == node


def test_substituted_values_are_not_expanded_again() -> None:
    assert interpolate("${A}", {"A": "${B}", "B": "no"}) == "${B}"


def test_unset_variable_without_default_names_key_path_and_variable(tmp_path: Path) -> None:
    data = {"models": [{"name": "a", "deployments": [{**OPENAI, "api_key": "${OPENAI_KEY}"}]}]}
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, data), env={"OTHER": "x"})
    msg = str(exc.value)
    assert msg.startswith("models[0].deployments[0].api_key: ")
    assert "environment variable OPENAI_KEY is not set" in msg


def test_unset_variable_in_list_item_path() -> None:
    with pytest.raises(ConfigError) as exc:
        interpolate({"models": [{"fallbacks": ["ok", "${FB}"]}]}, {})
    assert str(exc.value).startswith("models[0].fallbacks[1]: environment variable FB is not set")


def test_unset_variable_at_top_level() -> None:
    with pytest.raises(ConfigError) as exc:
        interpolate("${NOPE}", {})
    assert str(exc.value).startswith("(top level): environment variable NOPE")


def test_load_config_uses_given_env_not_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_TEST_KEY", "from-os")
    data = {"models": [{"name": "a", "deployments": [{**OPENAI, "api_key": "${PORTICO_TEST_KEY}"}]}]}
    p = write(tmp_path, data)
    with pytest.raises(ConfigError):
        load_config(p, env={})
    dep = load_config(p).models[0].deployments[0]
    assert isinstance(dep, OpenAIDeployment)
    assert dep.api_key is not None
    assert dep.api_key.get_secret_value() == "from-os"


# ---- validation errors name the key path ------------------------------------------------------------------


def test_unknown_key_in_deployment() -> None:
    msg = error_of({"models": [{"name": "a", "deployments": [{**OPENAI, "base_ulr": "http://x"}]}]})
    assert "models[0].deployments[0].base_ulr: unknown key" in msg
    assert ".openai." not in msg  # the discriminator tag is not a key


def test_unknown_key_in_second_model_nested() -> None:
    msg = error_of({"models": [chat("a"), {"name": "b", "deployments": [{**OPENAI, "timeouts": {"conect": 1}}]}]})
    assert "models[1].deployments[0].timeouts.conect: unknown key" in msg


def test_unknown_top_level_key() -> None:
    assert "modles: unknown key" in error_of({"models": [chat("a")], "modles": []})


def test_every_problem_is_listed() -> None:
    msg = error_of({"models": [chat("a", typo=1)], "server": {"port": 70000}})
    assert "models[0].typo: unknown key" in msg
    assert "server.port:" in msg


def test_unknown_provider() -> None:
    msg = error_of({"models": [{"name": "a", "deployments": [{"provider": "openia"}]}]})
    assert "models[0].deployments[0]:" in msg
    assert "'openia'" in msg


def test_duplicate_model_names() -> None:
    msg = error_of({"models": [chat("a"), chat("b"), chat("a")]})
    assert "models[2].name: 'a' is defined twice" in msg


def test_unknown_fallback_model() -> None:
    msg = error_of({"models": [chat("a", fallbacks=["b", "ghost"]), chat("b")]})
    assert "models[0].fallbacks[1]: unknown model 'ghost'" in msg


def test_fallback_of_wrong_type() -> None:
    embed = {"name": "e", "type": "embedding", "deployments": [dict(OPENAI)]}
    msg = error_of({"models": [chat("a", fallbacks=["e"]), embed]})
    assert "models[0].fallbacks[0]:" in msg
    assert "'e' is a" in msg
    assert "is an embedding model, not chat" in msg


def test_fallback_to_itself() -> None:
    msg = error_of({"models": [chat("a", fallbacks=["a"])]})
    assert "models[0].fallbacks[0]: a model cannot fall back to itself" in msg


def test_application_with_unknown_model() -> None:
    msg = error_of({"models": [chat("a")], "applications": [{"name": "app", "model": "ghost"}]})
    assert "applications[0].model: unknown model 'ghost'" in msg


def test_application_name_clashing_with_model() -> None:
    msg = error_of({"models": [chat("a")], "applications": [{"name": "a", "model": "a"}]})
    assert "applications[0].name: 'a' is already a model name" in msg


def test_application_on_embedding_model() -> None:
    embed = {"name": "e", "type": "embedding", "deployments": [dict(OPENAI)]}
    msg = error_of({"models": [embed], "applications": [{"name": "app", "model": "e"}]})
    assert "applications[0].model: 'e' is not a chat model" in msg


def test_document_embedder_must_be_an_embedding_model() -> None:
    embed = {"name": "e", "type": "embedding", "deployments": [{"provider": "local"}]}
    int8 = {"name": "e8", "type": "embedding", "deployments": [{"provider": "local", "precision": "int8"}]}
    assert "knowledge.document_embedder: 'a' is not an embedding model" in error_of(
        {"models": [chat("a"), embed], "knowledge": {"document_embedder": "a"}}
    )
    msg = error_of({"models": [embed], "knowledge": {"document_embedder": "nope"}})
    assert "'nope' is not an embedding model" in msg
    cfg = validate({"models": [embed, int8], "knowledge": {"document_embedder": "e8"}})
    assert cfg.knowledge.document_embedder == "e8" and cfg.embedder_model == "e"
    assert "precision" in error_of({"models": [{**int8, "deployments": [{"provider": "local", "precision": "int4"}]}]})


def test_duplicate_application_names_are_not_called_model_names() -> None:
    apps = [{"name": "app", "model": "a"}, {"name": "app", "model": "a"}]
    msg = error_of({"models": [chat("a")], "applications": apps})
    assert "applications[1].name" in msg
    assert "already a model name" not in msg


def test_vertex_without_project() -> None:
    msg = error_of({"models": [{"name": "a", "deployments": [{"provider": "vertex"}]}]})
    assert "models[0].deployments[0]: provider 'vertex' needs 'project'" in msg


def test_anthropic_embedding_model() -> None:
    msg = error_of({"models": [{"name": "e", "type": "embedding", "deployments": [{"provider": "anthropic"}]}]})
    assert "models[0]: provider 'anthropic' has no embeddings API" in msg


def test_empty_models_list() -> None:
    assert "models:" in error_of({"models": []})


def test_missing_models_key() -> None:
    assert "models: Field required" in error_of({"server": {}})


def test_validate_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        validate(["models"])


# ---- secrets ------------------------------------------------------------------------------------------------


def secret_cfg() -> PorticoConfig:
    return validate({"models": [{"name": "a", "deployments": [{**OPENAI, "api_key": SECRET}]}]})


def test_api_key_is_secret_str_and_readable() -> None:
    dep = secret_cfg().models[0].deployments[0]
    assert isinstance(dep, OpenAIDeployment)
    assert dep.api_key is not None
    assert dep.api_key.get_secret_value() == SECRET


def test_repr_and_str_hide_the_secret() -> None:
    cfg = secret_cfg()
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg)
    assert SECRET not in repr(cfg.models[0].deployments[0])


def test_public_view_has_no_api_key() -> None:
    view = public_view(secret_cfg())
    dep = view["models"][0]["deployments"][0]
    assert "api_key" not in dep
    assert dep["base_url"] == OPENAI["base_url"]
    assert SECRET not in repr(view)


# ---- provider defaults ------------------------------------------------------------------------------------


def gemini_dep(**kw: Any) -> GeminiDeployment:
    cfg = validate({"models": [{"name": "g", "deployments": [kw]}]})
    dep = cfg.models[0].deployments[0]
    assert isinstance(dep, GeminiDeployment)
    return dep


def test_vertex_without_base_url_gets_regional_host() -> None:
    dep = gemini_dep(provider="vertex", project="p1", location="europe-west4")
    assert dep.base_url == "https://europe-west4-aiplatform.googleapis.com"


def test_vertex_default_location_host() -> None:
    assert gemini_dep(provider="vertex", project="p1").base_url == "https://us-central1-aiplatform.googleapis.com"


def test_vertex_global_location_host() -> None:
    dep = gemini_dep(provider="vertex", project="p1", location="global")
    assert dep.base_url == "https://aiplatform.googleapis.com"


def test_vertex_keeps_explicit_base_url() -> None:
    assert gemini_dep(provider="vertex", project="p1", base_url="http://vx").base_url == "http://vx"


def test_gemini_keeps_google_ai_host() -> None:
    assert gemini_dep(provider="gemini").base_url == "https://generativelanguage.googleapis.com"

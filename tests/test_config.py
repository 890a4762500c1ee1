from pathlib import Path

import pytest

from copyhunt.config import ConfigError, load_settings


def test_defaults_run_on_one_machine(tmp_path):
    s = load_settings(env={"COPYHUNT_HOME": str(tmp_path)})
    assert s.lake == tmp_path / "data" / "lake"
    assert s.database_url == f"sqlite:///{tmp_path}/data/copyhunt.db"
    assert s.spark_master == "local[*]"
    assert s.smtp_host == "" and s.outbox == tmp_path / "data" / "outbox"
    assert s.crawl_allow_private is False


def test_env_overrides_file_and_types_are_coerced(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[copyhunt]\nspark_master = "spark://file:7077"\nshard_size = 500\ncrawl_allow_private = true\n')
    s = load_settings(env={"COPYHUNT_CONFIG": str(cfg), "COPYHUNT_SHARD_SIZE": "2_000", "COPYHUNT_HOME": str(tmp_path),
                           "COPYHUNT_HITS_DB_URL": "postgresql+psycopg://u@db/hits"})
    assert s.spark_master == "spark://file:7077"
    assert s.shard_size == 2000
    assert s.crawl_allow_private is True
    assert s.database_url == "postgresql+psycopg://u@db/hits"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"COPYHUNT_SHARD_SIZE": "many"}, "shard_size"),
        ({"COPYHUNT_CRAWL_ALLOW_PRIVATE": "maybe"}, "crawl_allow_private"),
        ({"COPYHUNT_SHARD_SIZE": "0"}, "shard_size"),
        ({"COPYHUNT_SMTP_PORT": "70000"}, "ports"),
    ],
)
def test_bad_values_give_clear_errors(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_malformed_or_unknown_config_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("shard_size = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={"COPYHUNT_CONFIG": str(bad)})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("shard_sise = 3\n")
    with pytest.raises(ConfigError, match="unknown settings shard_sise"):
        load_settings(env={"COPYHUNT_CONFIG": str(unknown)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"COPYHUNT_CONFIG": str(tmp_path / "missing.toml")})


def test_as_env_round_trips(tmp_path):
    s = load_settings(env={"COPYHUNT_HOME": str(tmp_path), "COPYHUNT_CRAWL_ALLOW_PRIVATE": "yes", "COPYHUNT_CRAWL_PROXY": "http://127.0.0.1:1"})
    assert load_settings(env=s.as_env()) == s

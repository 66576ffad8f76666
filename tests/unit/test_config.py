from pathlib import Path

import pytest

from mmsearch.kit.config import DEV_TOKENS_FILE, ConfigError, load_settings


def test_defaults_are_local_mode() -> None:
    settings = load_settings({})
    assert settings.grpc_host == "127.0.0.1"
    assert settings.grpc_port == 50051
    assert settings.auth_tokens_file == DEV_TOKENS_FILE
    assert settings.uses_dev_tokens


def test_environment_overrides_and_coerces_types() -> None:
    settings = load_settings(
        {
            "MMSEARCH_GRPC_PORT": "6000",
            "MMSEARCH_SHUTDOWN_GRACE_S": "2.5",
            "MMSEARCH_AUTH_TOKENS_FILE": "/x.json",
        }
    )
    assert settings.grpc_port == 6000
    assert settings.shutdown_grace_s == 2.5
    assert settings.auth_tokens_file == Path("/x.json")
    assert not settings.uses_dev_tokens


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MMSEARCH_GRPC_PORT", "70000"),
        ("MMSEARCH_GRPC_PORT", "fifty"),
        ("MMSEARCH_SHUTDOWN_GRACE_S", "0"),
        ("MMSEARCH_LOG_LEVEL", "LOUD"),
        ("MMSEARCH_EMBED_MAX_ITEMS", "0"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_unknown_variables_are_rejected() -> None:
    with pytest.raises(ConfigError, match="MMSEARCH_GRPC_PROT"):
        load_settings({"MMSEARCH_GRPC_PROT": "1"})


def test_stack_and_client_variables_are_not_service_config() -> None:
    load_settings({"MMSEARCH_STACK_BROKER_PORT": "1", "MMSEARCH_CLIENT_TOKEN": "t"})


def test_overrides_win_over_environment() -> None:
    assert load_settings({"MMSEARCH_GRPC_PORT": "6000"}, grpc_port=0).grpc_port == 0


def test_public_dev_tokens_are_refused_off_loopback() -> None:
    with pytest.raises(ConfigError, match="AUTH_TOKENS_FILE"):
        load_settings({"MMSEARCH_GRPC_HOST": "0.0.0.0"})
    assert load_settings(
        {"MMSEARCH_GRPC_HOST": "0.0.0.0", "MMSEARCH_ALLOW_DEV_TOKENS": "true"}
    ).allow_dev_tokens
    load_settings({"MMSEARCH_GRPC_HOST": "0.0.0.0", "MMSEARCH_AUTH_TOKENS_FILE": "/etc/mmsearch/tokens.json"})


def test_kafka_client_checksums_records_in_c() -> None:
    """kafka-python falls back to a pure-Python CRC32C (~2-5 MB/s) without the `crc32c`
    package: every consumed and produced record batch pays it, ~10 s of CPU per 1,000 photos."""
    from kafka.record import util

    assert util.crc32c_c is not None


def test_connection_age_is_validated_and_off_by_default() -> None:
    assert load_settings({}).grpc_max_connection_age_s == 0
    assert load_settings({"MMSEARCH_GRPC_MAX_CONNECTION_AGE_S": "300"}).grpc_max_connection_age_s == 300
    with pytest.raises(ConfigError, match="GRPC_MAX_CONNECTION_AGE_S"):
        load_settings({"MMSEARCH_GRPC_MAX_CONNECTION_AGE_S": "-1"})


def test_the_gateway_refuses_the_dev_producer_secret_off_loopback() -> None:
    from mmsearch.kit.config import check_gateway_producer

    public = {"MMSEARCH_GRPC_HOST": "0.0.0.0", "MMSEARCH_KAFKA_BOOTSTRAP": "kafka:9092"}
    allowed = load_settings(public, allow_dev_tokens=True)
    check_gateway_producer(allowed)
    with pytest.raises(ConfigError, match="GATEWAY_PRODUCER_ID"):
        check_gateway_producer(allowed.model_copy(update={"allow_dev_tokens": False}))

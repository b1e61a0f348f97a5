"""The hub through an authenticated, encrypted Kafka listener (SASL_SSL with SCRAM and
PLAIN), and what it does with wrong credentials, an untrusted broker and weak topics.

Real Apache Kafka with a second listener (switchboard.brokers.kafka.SecureListener); the
certificates are made here with `cryptography`. Runs on the Kafka tier only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from switchboard.acls import SERVICES, required_acls
from switchboard.broker_config import check_broker_access
from switchboard.brokers import free_port
from switchboard.brokers.kafka import KafkaBroker, SecureListener
from switchboard.brokers.kafka_wire import create_acls
from switchboard.errors import ConfigError
from switchboard.kafka import REGISTRY
from switchboard.kafka_topics import ensure_topics, topic_specs
from switchboard.services.runtime import Runtime
from switchboard.settings import Settings
from tests.conftest import RunningHub, make_settings
from tests.fakes.syncro import FakeSyncro
from tests.support import Receiver, message, sign_with_cryptography

pytestmark = pytest.mark.kafka_only

HUB_USER, HUB_PASSWORD = "switchboard", "s3cret-" + uuid.uuid4().hex
WRONG_PASSWORD = "not-the-password-" + uuid.uuid4().hex


@dataclass
class Pki:
    ca: Path  # the CA certificate (PEM): what clients trust
    keystore: Path  # the broker's PKCS#8 key and certificate chain (PEM)
    other_ca: Path  # a CA that did not sign the broker's certificate
    client_cert: Path  # a client certificate signed by the CA (mutual TLS), and its key
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str,
          usage: x509.ObjectIdentifier) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def make_pki(folder: Path) -> Pki:
    ca_key, ca_cert = _ca("switchboard test CA")
    key, cert = _leaf(ca_key, ca_cert, "127.0.0.1", x509.ExtendedKeyUsageOID.SERVER_AUTH)
    client_key, client_cert = _leaf(ca_key, ca_cert, "switchboard",
                                    x509.ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    pki = Pki(folder / "ca.pem", folder / "broker.pem", folder / "other-ca.pem",
              folder / "client.pem", folder / "client-key.pem")
    pki.client_cert.write_bytes(client_cert.public_bytes(pem))
    pki.client_key.write_bytes(client_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.keystore.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
        + cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    pki.other_ca.write_bytes(_ca("someone else")[1].public_bytes(pem))
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[KafkaBroker]:
    """Kafka whose second listener is SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)."""
    listener = SecureListener("SASL_SSL", free_port(), users={HUB_USER: HUB_PASSWORD},
                              keystore=pki.keystore)
    broker = KafkaBroker.start(tmp_path_factory.mktemp("secure-kafka"), secure=listener)
    try:
        yield broker
    finally:
        broker.stop()


class _Secure:
    """The broker as the hub sees it: only the authenticated listener."""

    kind = "kafka"

    def __init__(self, broker: KafkaBroker) -> None:
        self.bootstrap = broker.secure_bootstrap


def secure_settings(broker: KafkaBroker, pki: Pki, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_ssl_ca_file": str(pki.ca),
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": HUB_USER,
        "kafka_sasl_password": HUB_PASSWORD,
    }
    values.update(overrides)
    return make_settings(_Secure(broker), **values)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


async def test_the_hub_works_through_sasl_ssl_with_scram(
        secure_kafka: KafkaBroker, pki: Pki, receiver: Receiver) -> None:
    settings = secure_settings(secure_kafka, pki)
    hub = await RunningHub(settings).start()
    try:
        hub_id, auth = await hub.create_hub()
        cust = await hub.create_integration(hub_id, auth, channelId="Direct", name="c",
                                            configuration={"integrationType": "Customer"})
        await hub.create_integration(
            hub_id, auth, channelId="Direct", name="a",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/a"})
        body = message("over TLS and SCRAM")
        r = await hub.client.post(
            f"/ingress/{cust['integrationId']}", content=body,
            headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"], body))
        assert r.status_code == 202, r.text
        got = await receiver.wait_for("/a", 1, timeout=60)
        assert got[0].json["activity"]["message"]["text"] == "over TLS and SCRAM"
        assert (await hub.client.get("/readyz")).status_code == 200
    finally:
        await hub.stop()
    # The topics were made through the secure listener, by the hub.
    admin = AIOKafkaAdminClient(bootstrap_servers=secure_kafka.bootstrap)
    await admin.start()
    try:
        names = set(await admin.list_topics())
    finally:
        await admin.close()
    assert {s.name for s in topic_specs(settings)} <= names


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
async def test_every_mechanism_reaches_the_broker(
        secure_kafka: KafkaBroker, pki: Pki, mechanism: str) -> None:
    settings = secure_settings(secure_kafka, pki, kafka_sasl_mechanism=mechanism)
    await check_broker_access(settings)
    await ensure_topics(settings)  # admin client: create, describe, check


async def test_a_wrong_password_is_refused_at_start(secure_kafka: KafkaBroker, pki: Pki) -> None:
    settings = secure_settings(secure_kafka, pki, kafka_sasl_password=WRONG_PASSWORD)
    runtime = Runtime(settings)
    with pytest.raises(ConfigError) as caught:
        async with asyncio.timeout(30):  # refused, not retried as "broker not ready"
            await runtime.start()
    text = str(caught.value)
    assert "refused user 'switchboard' (SCRAM-SHA-512)" in text
    assert WRONG_PASSWORD not in text and HUB_PASSWORD not in text


async def test_serve_exits_with_a_clear_error_on_a_wrong_password(
        secure_kafka: KafkaBroker, pki: Pki) -> None:
    settings = secure_settings(secure_kafka, pki, kafka_sasl_password=WRONG_PASSWORD)
    env = {**os.environ,
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "SWITCHBOARD_SECRET_KEY": settings.secret_key,
           "SWITCHBOARD_ADMIN_TOKEN": settings.admin_token + "-long-enough-for-serve",
           "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
           "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "SWITCHBOARD_KAFKA_SSL_CA_FILE": str(pki.ca),
           "SWITCHBOARD_KAFKA_SASL_USERNAME": HUB_USER,
           "SWITCHBOARD_KAFKA_SASL_PASSWORD": WRONG_PASSWORD}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "switchboard"), "serve", "router",
        "--port", str(free_port()), env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode != 0
    text = (out + err).decode()
    assert "refused user 'switchboard' (SCRAM-SHA-512)" in text, text[-3000:]
    assert WRONG_PASSWORD not in text


async def test_an_untrusted_broker_certificate_is_refused(
        secure_kafka: KafkaBroker, pki: Pki) -> None:
    settings = secure_settings(secure_kafka, pki, kafka_ssl_ca_file=str(pki.other_ca))
    with pytest.raises(ConfigError, match="TLS certificate is not trusted"):
        await check_broker_access(settings)


async def test_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    """An SSL listener that requires a client certificate: the hub presents its own."""
    listener = SecureListener("SSL", free_port(), keystore=pki.keystore, truststore=pki.ca)
    broker = KafkaBroker.start(tmp_path / "mtls-kafka", secure=listener)
    try:
        target = _Secure(broker)
        settings = make_settings(target, kafka_security_protocol="SSL",
                                 kafka_ssl_ca_file=str(pki.ca),
                                 kafka_ssl_cert_file=str(pki.client_cert),
                                 kafka_ssl_key_file=str(pki.client_key))
        hub = await RunningHub(settings, ["api"]).start()
        try:
            await hub.create_hub()
            assert (await hub.client.get("/readyz")).status_code == 200
        finally:
            await hub.stop()
        # Without a client certificate the broker closes the connection (TLS 1.3 says no
        # more): not a start, and the error says what may be missing.
        anonymous = make_settings(target, kafka_security_protocol="SSL",
                                  kafka_ssl_ca_file=str(pki.ca))
        with pytest.raises(KafkaConnectionError, match="requires a client certificate"):
            await check_broker_access(anonymous, timeout_s=5)
    finally:
        broker.stop()


async def test_weak_existing_topics_are_refused_or_warned(
        broker: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    """A registry topic someone created without compaction would lose hubs at retention."""
    settings = make_settings(broker)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.topic(REGISTRY), 1, 1,
                                            topic_configs={"cleanup.policy": "delete"})])
    finally:
        await admin.close()
    with pytest.raises(ConfigError, match=r"registry: cleanup.policy delete, needs compact"):
        await ensure_topics(settings)
    with caplog.at_level("WARNING", logger="switchboard.kafka_topics"):
        await ensure_topics(make_settings(broker, topic_prefix=settings.topic_prefix,
                                          topic_check="warn"))
    assert "cleanup.policy delete, needs compact" in caplog.text
    # A replication factor the single broker cannot give is refused, not attempted.
    with pytest.raises(ConfigError, match="REPLICATION_FACTOR=3 but the cluster has 1"):
        await ensure_topics(make_settings(broker, topic_replication_factor="3"))


SERVICE_PASSWORDS = {service: f"{service}-{uuid.uuid4().hex}" for service in SERVICES}


@pytest.fixture(scope="module")
def authorizing_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """Kafka that enforces ACLs on a SASL_PLAINTEXT listener (deny when none matches)."""
    listener = SecureListener("SASL_PLAINTEXT", free_port(),
                              users={**SERVICE_PASSWORDS, "nobody": "nobody-pw"},
                              authorize=True)
    broker = KafkaBroker.start(tmp_path_factory.mktemp("acl-kafka"), secure=listener)
    try:
        yield broker
    finally:
        broker.stop()


def as_principal(broker: KafkaBroker, base: Settings, user: str, password: str) -> Settings:
    return msgspec.structs.replace(
        base, kafka_bootstrap_servers=broker.secure_bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username=user, kafka_sasl_password=password)


async def test_each_service_runs_with_exactly_the_acls_the_readme_lists(
        authorizing_kafka: KafkaBroker, receiver: Receiver) -> None:
    """Every service as its own principal, allowed only `required_acls`: a message goes
    from the ingress through the router and the deliverer to a webhook, and the API's
    delivery log sees it; the API calls Syncro within the shared budget (syncro.slots)."""
    syncro = await FakeSyncro().start()
    base = make_settings(_Secure(authorizing_kafka), syncro_api_url=syncro.api_url())
    for service in SERVICES:
        acls = required_acls(base, service)
        await asyncio.to_thread(create_acls, authorizing_kafka.port, f"User:{service}",
                                [(a.resource, a.name, a.operation) for a in acls])
    hubs: dict[str, RunningHub] = {}
    try:
        for service in SERVICES:  # the API first: it may create the topics
            settings = as_principal(authorizing_kafka, base, service, SERVICE_PASSWORDS[service])
            hubs[service] = await RunningHub(settings, [service]).start()
        api, ingress = hubs["api"], hubs["ingress"]
        hub_id, auth = await api.create_hub()
        cust = await api.create_integration(hub_id, auth, channelId="Direct", name="c",
                                            configuration={"integrationType": "Customer"})
        agent = await api.create_integration(
            hub_id, auth, channelId="Direct", name="a",
            configuration={"integrationType": "Agent", "webhookUrl": receiver.url + "/a"})
        body = message("least privilege")
        for _ in range(100):  # the ingress's view follows the registry
            r = await ingress.client.post(
                f"/ingress/{cust['integrationId']}", content=body,
                headers=sign_with_cryptography(cust["configuration"]["privateSigningKey"],
                                               body, msg_id="m-1"))
            if r.status_code != 404:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 202, r.text
        got = await receiver.wait_for("/a", 1, timeout=60)
        assert got[0].json["activity"]["message"]["text"] == "least privilege"
        for _ in range(100):  # the delivery log (deliveries.attempts), as the API reads it
            log = await api.client.get(
                f"/api/v1/integrations/{agent['integrationId']}/deliveries", headers=auth)
            assert log.status_code == 200, log.text
            if log.json()["items"]:
                break
            await asyncio.sleep(0.1)
        assert log.json()["items"], log.text
        account = syncro.add_account("acl" + uuid.uuid4().hex[:6], "tok")
        psa = await api.create_integration(
            hub_id, auth, channelId="Syncro", name="psa",
            configuration={"subdomain": account.subdomain, "apiToken": "tok"})
        assert psa["configuration"]["userName"] == "Tech Tina"
        for service, h in hubs.items():
            assert (await h.client.get("/healthz")).status_code == 200, service
            assert (await h.client.get("/readyz")).status_code == 200, service
    finally:
        for h in hubs.values():
            await h.stop()
        await syncro.stop()


async def test_a_principal_without_acls_is_refused_at_start(
        authorizing_kafka: KafkaBroker) -> None:
    settings = as_principal(authorizing_kafka, make_settings(_Secure(authorizing_kafka)),
                            "nobody", "nobody-pw")
    with pytest.raises(ConfigError, match=r"Kafka refused .*ACLs each service needs"):
        async with asyncio.timeout(30):
            await Runtime(settings).start()

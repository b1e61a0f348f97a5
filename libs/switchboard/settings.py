"""Configuration from environment variables, read once at start.

Every setting, its variable and its default is listed in the README ("Configuration").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from msgspec import Struct

from switchboard.errors import ConfigError
from switchboard.retry import RetryPolicy
from switchboard.tracing import check_settings


class Settings(Struct, frozen=True, kw_only=True):
    """Process-wide settings. Build with `Settings.from_env()`."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # "auto": on unless the broker is the embedded Tansu, which lacks InitProducerId.
    kafka_idempotence: Literal["auto", "on", "off"] = "auto"
    broker_kind: Literal["kafka", "tansu"] = "kafka"
    topic_prefix: str = ""
    partitions: int = 8
    secret_key: str = ""
    # Comma-separated: the first seals, every one opens (key rotation); wins over secret_key.
    secret_keys: str = ""
    admin_token: str = ""
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = 256 * 1024
    # A request body (API or ingress) not fully received this long after its headers is
    # answered 408 and its connection closed: a slow-drip sender holds no socket for long.
    body_read_timeout_s: float = 30.0
    timestamp_tolerance_s: int = 300
    key_grace_s: int = 24 * 3600
    produce_timeout_s: float = 5.0
    session_timeout_ms: int = 6000
    # How long a fetch may wait for data (0 = by broker: 10 ms on Tansu, 20 on Kafka).
    # Kafka answers as soon as data arrives, so there it only bounds idle polling; the
    # embedded Tansu always waits it out, so there it is latency on every hop (measured:
    # two hops at 300/s p50 18 ms at 20, 14 ms at 10, for a third more broker CPU while
    # busy; idle consumers pause on Tansu, so idle costs nothing either way).
    fetch_max_wait_ms: int = 0
    # Tansu only: an idle consumer (nothing read for 10 polls) pauses and looks again this
    # often, or at once when a producer of the same process writes to its topic.
    fetch_idle_poll_ms: int = 5000
    heartbeat_interval_ms: int = 1000
    delivery_timeout_s: float = 10.0
    # Waits before each attempt, each counted from the previous failure (the first is the
    # wait before attempt 1: 0 = at once); about 27 hours in all. Jittered ±retry_jitter.
    retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    retry_jitter: float = 0.2
    # A retry due within this many seconds waits in memory; a longer one is parked on
    # Kafka (deliveries.parked), holding no task, slot or payload.
    retry_inline_max_s: float = 10.0
    # Consecutive failed attempts to one destination that open its circuit, and the first
    # wait before a probe (doubling while probes fail, up to the schedule's longest wait).
    circuit_failures: int = 10
    circuit_cooldown_s: float = 30.0
    # A destination failing for this long without one success is disabled (statusId 3002).
    disable_after_s: float = 5 * 24 * 3600
    # Deliveries to loopback, private, link-local, CGNAT or metadata addresses; `dev` turns
    # this on, `serve` leaves it off.
    allow_private_destinations: bool = False
    max_in_flight: int = 256
    max_in_flight_per_destination: int = 32
    max_in_flight_per_hub: int = 64
    # Deliveries the API's attempts view keeps (oldest forgotten first).
    delivery_log_max: int = 1_000_000
    max_pending_per_partition: int = 2000
    # A conversation with no activity for this long ends (a tombstone on `conversations`);
    # a customer who writes again starts a new one. Default 30 days.
    conversation_timeout_s: float = 30 * 24 * 3600
    # How often each router looks for ended conversations among those it owns.
    conversation_sweep_s: float = 3600.0
    # Conversations each process keeps in memory; the rest wait in a local index file
    # (in `state_dir`, rebuilt from the topic at every start).
    conversation_cache_size: int = 10_000
    # History kept on the log topics (activities, deliveries, attempts, dead letters):
    # how far back replay, redelivery and the delivery log reach. Set at topic creation.
    retention_hours: float = 168.0
    # Where processes keep rebuildable local files ("" = the system's temporary directory).
    state_dir: str = ""
    # Tries of a record that fails with an internal error (a bug, not a delivery failure)
    # before it is dead-lettered with reason `internal_error` and its stage moves on.
    internal_error_tries: int = 5
    stream_max_connections_per_integration: int = 8
    ingress_rate_per_s: float = 200.0
    ingress_burst: int = 400
    # Ingress requests that fail authentication, per client address (not per integration).
    ingress_unverified_rate_per_s: float = 20.0
    ingress_unverified_burst: int = 100
    # A WebChat visitor's session token stops working this long after it was issued
    # (every visit issues a fresh one).
    webchat_session_ttl_s: int = 30 * 24 * 3600
    api_rate_per_s: float = 50.0
    api_burst: int = 100
    # Hubs that get their own label on per-hub metrics; later ones count as "other".
    metrics_max_hubs: int = 100
    # Bearer token for GET /metrics ("" = the admin token): metrics name hubs, so no
    # tenant may read them.
    metrics_token: str = ""
    # "text", or "json": one object per line with service, hub, integration and ids.
    log_format: str = "text"
    # OpenTelemetry tracing (switchboard.tracing): off while empty; else the OTLP/HTTP
    # collector's base URL (spans go to <endpoint>/v1/traces). Ratio: of new traces (the
    # ingress's), kept; later spans follow their trace's decision.
    otel_endpoint: str = ""
    otel_service_name: str = "switchboard"
    otel_sample_ratio: float = 1.0
    # `serve` on SIGTERM: readiness fails for `shutdown_drain_s` while the load balancer
    # lets go, then intake stops; work in flight gets `shutdown_timeout_s` to finish.
    shutdown_drain_s: float = 5.0
    shutdown_timeout_s: float = 10.0
    # Websockets, every endpoint (uvicorn's own defaults: 16 MiB messages, compression on).
    # A larger message closes the socket with 1009; compressed frames are refused unread.
    ws_max_message_bytes: int = 64 * 1024
    ws_per_message_deflate: bool = False
    # Proxies trusted to name the client in X-Forwarded-For (per-address limits count it).
    forwarded_allow_ips: str = "127.0.0.1"
    # WebChat, per ingress process: sockets, new visitors (token buckets), history replays.
    webchat_hello_timeout_s: float = 5.0
    webchat_max_sockets_per_address: int = 16
    webchat_max_sockets_per_integration: int = 2000
    webchat_visitor_rate_per_address_per_s: float = 0.5
    webchat_visitor_burst_per_address: int = 20
    webchat_visitor_rate_per_integration_per_s: float = 5.0
    webchat_visitor_burst_per_integration: int = 100
    webchat_replay_concurrency: int = 8
    webchat_replay_wait_s: float = 5.0
    webchat_replay_timeout_s: float = 30.0
    # Stream gateway, per process: sockets per hub, what a slow socket may queue, catch-ups.
    stream_max_connections_per_hub: int = 64
    stream_max_queued: int = 1000
    stream_catchup_concurrency: int = 8
    stream_catchup_wait_s: float = 5.0
    stream_catchup_timeout_s: float = 60.0
    # `?access_token=` on the stream (deprecated: use a header or the subprotocol).
    stream_allow_query_token: bool = True
    # Providers (issue #4): API base URLs default to the real services.
    twilio_api_url: str = "https://api.twilio.com"
    meta_graph_url: str = "https://graph.facebook.com"
    meta_graph_version: str = "v19.0"
    meta_verify_token: str = ""
    meta_app_secret: str = ""
    slack_api_url: str = "https://slack.com/api"
    slack_signing_secret: str = ""
    slack_client_id: str = ""
    slack_client_secret: str = ""
    # A Slack install's `state` (UNIX time + client secret) is accepted this long (Slack's
    # OAuth codes expire after 10 minutes anyway), either side of now.
    slack_state_window_s: float = 600.0
    # Syncro's API per account: "{subdomain}" is replaced by the integration's subdomain.
    syncro_api_url: str = "https://{subdomain}.syncromsp.com/api/v1"
    # Syncro's budget per account, across every process (switchboard.providers.
    # syncro_budget): requests in any window of that many seconds.
    syncro_rate_limit: int = 180
    syncro_rate_window_s: float = 60.0
    # Microsoft Graph (the sync's mailbox connector); tests point it at a loopback fake.
    graph_api_url: str = "https://graph.microsoft.com/v1.0"
    # The Microsoft identity platform that refreshes a mailbox's Graph access token
    # ({authority}/{tenant}/oauth2/v2.0/token); tests point it at a loopback fake.
    graph_authority_url: str = "https://login.microsoftonline.com"
    # Comma-separated URL prefixes a Graph sign-in may send the browser back to when done
    # (switchboard.sync.graph_signin.return_allowed); none: the hub's own page only.
    graph_signin_return_urls: str = ""
    # The Graph calls a lifecycle notification leaves to do after its 202 (reauthorize,
    # subscribe again, request a run), tried again when they fail for a passing reason
    # (429, 5xx, no answer): seconds before each attempt (a switchboard.retry schedule),
    # all within the total (switchboard.sync.graph_retry).
    graph_lifecycle_retry_schedule: str = "0,2,10,30,60,120"
    graph_lifecycle_retry_max_s: float = 300.0
    provider_timeout_s: float = 10.0
    # Two-way sync: a connector's Retry-After longer than this fails the run (its error
    # says so) instead of holding the worker.
    sync_max_retry_after_s: float = 900.0
    # E-mail logging with fetchAttachments: the bytes of one message's attachments copied
    # at most (in order, while they fit; the rest skipped and counted). Graph's limit for
    # an attachment sent in one request is 3 MB; at most sync.records.ATTACHMENT_CEILING.
    sync_attachment_max_bytes: int = 3 * 1024 * 1024
    # How long `sync.runs` keeps a run after its last state (the `GET …/syncJobs` history a
    # restarted process still lists). Set at topic creation (`cleanup.policy=compact,delete`).
    sync_runs_retention_days: float = 30.0
    # Creates a sync run makes at once (only those a later run could match by e-mail,
    # domain or name: switchboard.sync.ops.alongside); 1 makes every create serial.
    sync_create_concurrency: int = 16
    # A Syncro side's paired ids are checked for records deleted for good (Syncro keeps
    # no tombstone) on initial runs and then at most once this often per profile and
    # module (switchboard.services.sync_vanished); 0: every run.
    sync_syncro_check_interval_s: float = 86400.0
    # TEST ONLY: registers the `testfile` connector kind (a side kept in a local SQLite
    # file, switchboard.services.sync_testfile). Never on in production.
    sync_test_connectors: bool = False
    # Seconds in a schedule's "minute" (intervalType 0). TEST ONLY below 60: lets a test
    # fire a "every 2 minutes" schedule every 2 s. Hours and days are not scaled.
    sync_schedule_minute_s: float = 60.0
    # A partner platform's signup (seed 000) is accepted this long either side of its
    # `requestTimestamp`; a signup not newer than the user's last accepted one is refused.
    sync_signup_window_s: float = 300.0
    # Kafka security (switchboard.broker_config): PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_ssl_ca_file: str = ""  # empty: the system's trust store
    kafka_ssl_cert_file: str = ""  # client certificate (mutual TLS), with its key
    kafka_ssl_key_file: str = ""
    kafka_ssl_key_password: str = ""
    kafka_ssl_check_hostname: bool = True
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"  # or SCRAM-SHA-256, PLAIN
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    # Topics the hub creates: "auto" = 3 / 2 on three or more brokers, 1 / 1 on one.
    topic_replication_factor: str = "auto"
    topic_min_insync_replicas: str = "auto"
    # Existing topics below that (or table topics not compacted): refuse to start, or warn.
    topic_check: str = "refuse"
    # After creating topics (Apache Kafka), wait up to this long for every new partition's
    # leader to serve it, so clients start quietly (0: do not wait; clients retry anyway).
    topic_ready_wait_s: float = 30.0
    # Internal records (registry, conversations, deliveries, …) without a valid MAC:
    # "enforce" refuses them; "accept-unsigned" also reads records written before MACs
    # (upgrade path; a MAC that is present must still be valid). New records are signed.
    record_mac: str = "enforce"

    @property
    def sealing_keys(self) -> str:
        """SWITCHBOARD_SECRET_KEYS if set, else SWITCHBOARD_SECRET_KEY."""
        return self.secret_keys or self.secret_key

    @property
    def idempotent_producer(self) -> bool:
        if self.kafka_idempotence == "auto":
            return self.broker_kind != "tansu"
        return self.kafka_idempotence == "on"

    @property
    def fetch_wait_ms(self) -> int:
        """`fetch_max_wait_ms`, or the broker's default when it is 0."""
        if self.fetch_max_wait_ms > 0:
            return self.fetch_max_wait_ms
        return 10 if self.broker_kind == "tansu" else 20

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read every setting from `env` (default: os.environ); `overrides` win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, default in _DEFAULTS.items():
            raw = env.get(_ENV_NAMES[name])
            if raw is None or raw == "":
                continue
            try:
                if isinstance(default, bool):
                    values[name] = raw.lower() in {"1", "true", "yes", "on"}
                elif isinstance(default, int):
                    values[name] = int(raw)
                elif isinstance(default, float):
                    values[name] = float(raw)
                else:
                    values[name] = raw
            except ValueError:
                raise ConfigError(f"{_ENV_NAMES[name]}={raw!r} is not a number") from None
        values.update(overrides)
        try:
            settings = cls(**values)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        if settings.kafka_idempotence not in ("auto", "on", "off"):
            raise ConfigError("SWITCHBOARD_KAFKA_IDEMPOTENCE must be auto, on or off")
        if settings.syncro_rate_limit < 2 or not settings.syncro_rate_window_s > 0:
            raise ConfigError("SWITCHBOARD_SYNCRO_RATE_LIMIT must be at least 2 and "
                              "SWITCHBOARD_SYNCRO_RATE_WINDOW_S above 0")
        if settings.log_format not in ("text", "json"):
            raise ConfigError("SWITCHBOARD_LOG_FORMAT must be text or json")
        if settings.record_mac not in ("enforce", "accept-unsigned"):
            raise ConfigError("SWITCHBOARD_RECORD_MAC must be enforce or accept-unsigned")
        check_settings(settings.otel_endpoint, settings.otel_sample_ratio)
        try:
            RetryPolicy.parse(settings.graph_lifecycle_retry_schedule)
        except ValueError as exc:
            raise ConfigError(f"SWITCHBOARD_GRAPH_LIFECYCLE_RETRY_SCHEDULE: {exc}") from None
        return settings


_DEFAULTS: dict[str, object] = {
    f: getattr(Settings(), f) for f in Settings.__struct_fields__
}
_ENV_NAMES: dict[str, str] = {
    f: ("KAFKA_BOOTSTRAP_SERVERS" if f == "kafka_bootstrap_servers" else f"SWITCHBOARD_{f.upper()}")
    for f in Settings.__struct_fields__
}


def env_names() -> dict[str, tuple[str, object]]:
    """Setting name → (environment variable, default), for docs and `switchboard dev`."""
    return {f: (_ENV_NAMES[f], _DEFAULTS[f]) for f in Settings.__struct_fields__}

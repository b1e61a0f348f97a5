"""Pure parts of the Apache Kafka launcher."""


def test_kafka_cluster_ids_never_look_like_options() -> None:
    from switchboard.brokers.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]
    assert all(not i.startswith("-") and len(i) == 22 for i in ids)
    assert len(set(ids)) == len(ids)
